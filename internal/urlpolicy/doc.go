// Package urlpolicy decides which URLs ferry may fetch. The URLs of a
// car.replicated event (and of a pin, later) come from whoever can
// publish one, so a fetch of them must not reach what only ferry's own
// machine can reach: the cloud metadata service, a database on loopback,
// an admin page on the private network. Every fetch ferry makes of a URL
// it was given goes through a Policy's Client; URLs an operator
// configures (the deal engine, the deal oracle) are trusted and do not.
//
// # Rules
//
//   - Only http and https are fetched. Any other scheme (file, gopher,
//     ftp…) is refused, whatever else is allowed.
//   - A URL with userinfo (user:password@host) is refused, whatever else is
//     allowed: it is never needed for a public CAR, and it hides the host
//     from a human reading the URL.
//   - A host that is a non-canonical form of an IP address (2130706433,
//     0x7f000001, 0177.0.0.1, 127.1) is refused: some resolvers read it
//     as an address, some as a name, and a policy must not guess which.
//   - An address is refused when it is not globally reachable: loopback,
//     unspecified, private (RFC 1918, fc00::/7), shared (100.64.0.0/10),
//     link-local (169.254.0.0/16 with the 169.254.169.254 metadata
//     service, fe80::/10), multicast, broadcast, reserved, documentation
//     and benchmarking ranges (the table in ranges.go). An IPv4-mapped
//     IPv6 address (::ffff:127.0.0.1) is judged as its IPv4 address, and
//     a NAT64 or 6to4 address by the IPv4 address it embeds.
//   - Addresses are checked where the connection is made, on the address
//     actually dialed (net.Dialer's Control), after DNS resolution: a name
//     that resolves to a public address when checked and to a private one
//     when dialed (a DNS rebind) cannot pass, and neither can a redirect.
//     An IP literal in a URL is also checked before any request, so the
//     reason says so without a dial.
//   - Every redirect target is checked like the first URL, scheme and
//     userinfo included; at most 10 redirects are followed.
//   - The Client never uses an HTTP proxy (HTTP_PROXY is ignored): a proxy
//     would make the dialed address the proxy's, not the target's.
//   - Config.AllowPrivate allows every address (the scheme and userinfo
//     rules still hold): for operators whose CARs live on a private
//     network, and for tests. Config.Allow allows chosen addresses only:
//     a CIDR prefix, one address, or one address and port (ferry's own
//     /cars/ store is allowed this way).
//   - A refusal is a *RefusedError (errors.Is(err, ErrRefused)) whose
//     text says what was refused and why, never anything the target
//     answered: no connection was made.
package urlpolicy
