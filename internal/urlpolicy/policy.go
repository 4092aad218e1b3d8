package urlpolicy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrRefused matches every *RefusedError.
var ErrRefused = errors.New("refused by the fetch policy")

// AllowFlag names the setting that lifts the address rules, for reasons.
const AllowFlag = "--fetch-allow-private"

// maxRedirects is how many redirects a fetch follows, as net/http does.
const maxRedirects = 10

// RefusedError says the policy refused a URL or an address.
type RefusedError struct {
	// Host is the URL's host (a name or an IP literal), when known.
	Host string
	// Addr is the refused address, when an address was refused.
	Addr netip.Addr
	// Why says what is wrong: "a loopback address", "scheme \"file\" is
	// not http or https".
	Why string
	// Redirect says the refused URL was a redirect's target.
	Redirect bool
}

func (e *RefusedError) Error() string {
	var b strings.Builder
	if e.Redirect {
		b.WriteString("a redirect: ")
	}
	if !e.Addr.IsValid() {
		b.WriteString(e.Why + ", refused by the fetch policy")
		return b.String()
	}
	addr := e.Addr.String()
	if host := strings.Trim(e.Host, "[]"); host != "" && host != addr {
		b.WriteString(clip(host) + " resolves to " + addr + ", ")
	} else {
		b.WriteString(addr + " is ")
	}
	b.WriteString(e.Why + ", refused by the fetch policy (" + AllowFlag + ")")
	return b.String()
}

// Is makes every RefusedError match ErrRefused.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// Rule allows addresses the policy refuses otherwise: those of Prefix,
// on Port only when Port is not zero.
type Rule struct {
	Prefix netip.Prefix
	Port   uint16
}

// ParseRule reads "10.1.0.0/16", "10.1.2.3", "10.1.2.3:8080" or
// "[fd00::1]:8080".
func ParseRule(s string) (Rule, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return Rule{Prefix: p.Masked()}, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return Rule{Prefix: netip.PrefixFrom(a, a.BitLen())}, nil
	}
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Port() != 0 {
		return Rule{Prefix: netip.PrefixFrom(ap.Addr(), ap.Addr().BitLen()), Port: ap.Port()}, nil
	}
	return Rule{}, fmt.Errorf("fetch allow rule %q: want a CIDR prefix, an IP address or IP:port", s)
}

// AddrPortRule allows exactly one address and port.
func AddrPortRule(ap netip.AddrPort) Rule {
	a := ap.Addr().Unmap()
	return Rule{Prefix: netip.PrefixFrom(a, a.BitLen()), Port: ap.Port()}
}

func (r Rule) String() string {
	if r.Port == 0 {
		return r.Prefix.String()
	}
	return netip.AddrPortFrom(r.Prefix.Addr(), r.Port).String()
}

func (r Rule) allows(ap netip.AddrPort) bool {
	return r.Prefix.Contains(ap.Addr().WithZone("").Unmap()) && (r.Port == 0 || r.Port == ap.Port())
}

// Config is what a Policy allows beyond the default.
type Config struct {
	// AllowPrivate allows every address; the scheme and userinfo rules
	// still hold.
	AllowPrivate bool
	// Allow lists addresses allowed although the default refuses them.
	Allow []Rule
	// Resolver resolves host names when dialing; nil is net.DefaultResolver.
	// Tests point it at their own DNS server.
	Resolver *net.Resolver
}

// Policy checks URLs and the addresses their fetches connect to. Its
// methods are safe for concurrent use.
type Policy struct {
	cfg    Config
	client func() *http.Client
}

// New returns a policy. Keep it: its Client reuses connections.
func New(cfg Config) *Policy {
	p := &Policy{cfg: cfg}
	p.client = sync.OnceValue(p.newClient)
	return p
}

// Default refuses everything the rules refuse and allows nothing more.
var Default = New(Config{})

// With returns a policy that also allows rules.
func (p *Policy) With(rules ...Rule) *Policy {
	cfg := p.cfg
	cfg.Allow = append(append([]Rule(nil), cfg.Allow...), rules...)
	return New(cfg)
}

// Check refuses a URL by its scheme, its userinfo and, when its host is
// an IP address, that address. A host name is resolved and checked only
// when the Client dials it. The error is a *RefusedError.
func (p *Policy) Check(u *url.URL) error {
	if u.Scheme != "http" && u.Scheme != "https" {
		return &RefusedError{Why: fmt.Sprintf("scheme %q is not http or https", clip(u.Scheme))}
	}
	if u.User != nil {
		return &RefusedError{Why: "userinfo (user@ or user:password@) in the URL"}
	}
	host := u.Hostname()
	if host == "" {
		return &RefusedError{Why: "a URL without a host"}
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		if numeric(host) {
			return &RefusedError{Why: fmt.Sprintf("host %q is not a canonical IP address", clip(host))}
		}
		return nil
	}
	return p.CheckAddr(netip.AddrPortFrom(a, port(u)))
}

// CheckAddr refuses an address the rules refuse and Config does not
// allow. The error is a *RefusedError.
func (p *Policy) CheckAddr(ap netip.AddrPort) error {
	if p.cfg.AllowPrivate {
		return nil
	}
	for _, r := range p.cfg.Allow {
		if r.allows(ap) {
			return nil
		}
	}
	if what := classify(ap.Addr()); what != "" {
		return &RefusedError{Addr: ap.Addr().WithZone(""), Why: what}
	}
	return nil
}

// Client returns the policy's HTTP client: every address it connects to,
// and every redirect it follows, passes the policy. It has no Timeout;
// callers bound their requests with contexts.
func (p *Policy) Client() *http.Client { return p.client() }

func (p *Policy) newClient() *http.Client {
	d := &net.Dialer{
		Timeout:   30 * time.Second,
		KeepAlive: 30 * time.Second,
		Resolver:  p.cfg.Resolver,
		Control:   p.control,
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.MaxIdleConnsPerHost = 4
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := d.DialContext(ctx, network, addr)
		if re, ok := errors.AsType[*RefusedError](err); ok {
			// The dialer knows the address; the URL's host makes the
			// reason say which name resolved to it.
			re.Host, _, _ = net.SplitHostPort(addr)
			return nil, re
		}
		return conn, err
	}
	return &http.Client{Transport: t, CheckRedirect: p.checkRedirect}
}

// control runs on every socket before it connects, with the address
// being connected to: the last word, after any resolution.
func (p *Policy) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &RefusedError{Why: fmt.Sprintf("unparsable %s address %q", network, clip(address))}
	}
	return p.CheckAddr(ap)
}

func (p *Policy) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("stopped after %d redirects", maxRedirects)
	}
	err := p.Check(req.URL)
	if re, ok := errors.AsType[*RefusedError](err); ok {
		re.Redirect = true
	}
	return err
}

// port is the URL's port, or its scheme's default.
func port(u *url.URL) uint16 {
	if n, err := strconv.ParseUint(u.Port(), 10, 16); err == nil {
		return uint16(n)
	}
	if u.Scheme == "https" {
		return 443
	}
	return 80
}

// numeric reports whether a host that is not an IP literal still looks
// like an address: its last label is a number (decimal, octal or hex).
// No DNS name ends in one, and inet_aton reads such hosts as addresses.
func numeric(host string) bool {
	host = strings.TrimSuffix(host, ".")
	last := host[strings.LastIndexByte(host, '.')+1:]
	if h, ok := strings.CutPrefix(strings.ToLower(last), "0x"); ok {
		last = h
		return last == "" || strings.Trim(last, "0123456789abcdef") == ""
	}
	return last != "" && strings.Trim(last, "0123456789") == ""
}

// clip bounds text taken from a URL in a reason.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
