package urlpolicy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

func TestCheckRefusesWhatTheRulesRefuse(t *testing.T) {
	const hint = ", refused by the fetch policy (--fetch-allow-private)"
	tests := []struct {
		name, url, want string // want "" means allowed
	}{
		{"a public host name passes (its address is checked when dialed)", "https://carpark.example/x.car", ""},
		{"a public IPv4 address passes", "http://8.8.8.8/x.car", ""},
		{"a public IPv6 address passes", "http://[2606:4700::1111]:8080/x.car", ""},
		{"the cloud metadata service is link-local", "http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address" + hint},
		{"loopback is refused", "http://127.0.0.1:8080/x.car", "127.0.0.1 is a loopback address" + hint},
		{"all of 127/8 is loopback", "http://127.8.9.10/", "127.8.9.10 is a loopback address"},
		{"IPv6 loopback is refused", "http://[::1]/", "::1 is a loopback address" + hint},
		{"IPv4-mapped loopback is loopback", "http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1 is a loopback address"},
		{"IPv4-mapped metadata is link-local", "http://[::ffff:a9fe:a9fe]/", "::ffff:169.254.169.254 is a link-local address"},
		{"NAT64 of the metadata service is judged by what it embeds", "http://[64:ff9b::a9fe:a9fe]/", "an address embedding 169.254.169.254, a link-local address"},
		{"6to4 of loopback is judged by what it embeds", "http://[2002:7f00:1::1]/", "an address embedding 127.0.0.1, a loopback address"},
		{"RFC 1918 10/8 is private", "http://10.1.2.3/", "10.1.2.3 is a private address"},
		{"RFC 1918 172.16/12 is private", "http://172.31.255.255/", "a private address"},
		{"RFC 1918 192.168/16 is private", "http://192.168.0.1/", "a private address"},
		{"unique local IPv6 is private", "http://[fd00:ec2::254]/", "fd00:ec2::254 is a private address"},
		{"link-local IPv6 with a zone is link-local", "http://[fe80::1%25eth0]/", "fe80::1 is a link-local address"},
		{"carrier-grade NAT is shared", "http://100.64.0.1/", "a shared (carrier-grade NAT) address"},
		{"0.0.0.0 is unspecified", "http://0.0.0.0:22/", "0.0.0.0 is an unspecified address"},
		{"[::] is unspecified", "http://[::]/", ":: is an unspecified address"},
		{"multicast is refused", "http://224.0.0.1/", "a multicast address"},
		{"broadcast is refused", "http://255.255.255.255/", "a broadcast address"},
		{"a decimal IPv4 host is refused", "http://2130706433/", `host "2130706433" is not a canonical IP address, refused by the fetch policy`},
		{"a hex IPv4 host is refused", "http://0x7f000001/", "is not a canonical IP address"},
		{"an octal IPv4 host is refused", "http://0177.0.0.1/", "is not a canonical IP address"},
		{"a short IPv4 host is refused", "http://127.1:8080/", "is not a canonical IP address"},
		{"userinfo is refused", "http://user:hunter2@carpark.example/x.car", "userinfo (user@ or user:password@) in the URL, refused by the fetch policy"},
		{"a user alone is refused", "http://user@carpark.example/x.car", "userinfo"},
		{"a file URL is refused", "file:///etc/passwd", `scheme "file" is not http or https, refused by the fetch policy`},
		{"a gopher URL is refused", "gopher://127.0.0.1:6379/_INFO", `scheme "gopher" is not http or https`},
		{"a URL without a host is refused", "http:///x.car", "a URL without a host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := url.Parse(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			err = Default.Check(u)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Check(%s) = %v, want it allowed", tt.url, err)
				}
				return
			}
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Check(%s) = %v, want a refusal containing %q", tt.url, err, tt.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("the reason repeats the URL's password: %v", err)
			}
		})
	}
}

func TestAllowingLiftsOnlyTheAddressRules(t *testing.T) {
	check := func(p *Policy, raw string) error {
		t.Helper()
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		return p.Check(u)
	}
	private := New(Config{AllowPrivate: true})
	for _, ok := range []string{"http://127.0.0.1/", "http://[::1]/", "http://169.254.169.254/", "http://10.0.0.1/"} {
		if err := check(private, ok); err != nil {
			t.Errorf("AllowPrivate: %s: %v", ok, err)
		}
	}
	for _, bad := range []string{"http://u:p@127.0.0.1/", "file:///etc/passwd", "http://2130706433/"} {
		if err := check(private, bad); !errors.Is(err, ErrRefused) {
			t.Errorf("AllowPrivate: %s: %v, want refused", bad, err)
		}
	}

	rules := []Rule{}
	for _, s := range []string{"10.0.0.0/8", "fd00::1", "127.0.0.1:8080"} {
		r, err := ParseRule(s)
		if err != nil {
			t.Fatal(err)
		}
		rules = append(rules, r)
	}
	some := New(Config{Allow: rules})
	for raw, allowed := range map[string]bool{
		"http://10.200.0.1/":              true,
		"http://[::ffff:10.200.0.1]/":     true,
		"http://[fd00::1]/":               true,
		"http://[fd00::2]/":               false,
		"http://192.168.0.1/":             false,
		"http://127.0.0.1:8080/cars/x":    true,
		"http://127.0.0.1:8081/cars/x":    false,
		"http://127.0.0.1/":               false,
		"http://u:p@10.200.0.1/":          false,
		"gopher://10.200.0.1/":            false,
		"https://carpark.example/x.car":   true,
		"http://[::ffff:127.0.0.1]:8080/": true,
	} {
		if err := check(some, raw); (err == nil) != allowed {
			t.Errorf("Allow %v: %s: %v, want allowed %v", rules, raw, err, allowed)
		}
	}
	for _, bad := range []string{"", "localhost", "10.0.0.0/33", "127.0.0.1:0", "example.com:80"} {
		if _, err := ParseRule(bad); err == nil {
			t.Errorf("ParseRule(%q) took it", bad)
		}
	}
}

// carServer is a real HTTP server on addr (127.0.0.1:0 for any port)
// that counts its requests.
func carServer(t *testing.T, addr string, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int32
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		h(w, r)
	})}}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &hits
}

func say(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, body) }
}

// get fetches raw with p's client and returns the body.
func get(p *Policy, raw string) (string, error) {
	resp, err := p.Client().Get(raw)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestTheClientChecksTheAddressItDials(t *testing.T) {
	srv, hits := carServer(t, "127.0.0.1:0", say("secret"))
	port := netip.MustParseAddrPort(srv.Listener.Addr().String()).Port()
	dns := startDNS(t, netip.MustParseAddr("127.0.0.1"))
	raw := "http://cars.test:" + itoa(port) + "/x.car"

	_, err := get(New(Config{Resolver: dns.resolver()}), raw)
	var re *RefusedError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "cars.test resolves to 127.0.0.1, a loopback address, refused by the fetch policy (--fetch-allow-private)") {
		t.Fatalf("a name resolving to loopback: %v, want it refused when dialed", err)
	}
	if hits.Load() != 0 || dns.queries.Load() == 0 {
		t.Fatalf("%d requests reached the server after %d DNS queries", hits.Load(), dns.queries.Load())
	}
	body, err := get(New(Config{Resolver: dns.resolver(), AllowPrivate: true}), raw)
	if err != nil || body != "secret" {
		t.Fatalf("AllowPrivate: %q, %v", body, err)
	}
}

// TestADNSRebindIsRefusedWhenDialed: a name first resolves to an allowed
// address (127.0.0.1 on the allowed port stands for a public host), and is
// fetched; then it resolves to a refused one (127.0.0.2, loopback, not
// allowed) where a second server holds a secret. A policy that judged the
// name once would go on trusting it; this one judges every dial.
func TestADNSRebindIsRefusedWhenDialed(t *testing.T) {
	secret, secretHits := carServer(t, "127.0.0.2:0", say("secret"))
	port := netip.MustParseAddrPort(secret.Listener.Addr().String()).Port()
	public, _ := carServer(t, "127.0.0.1:"+itoa(port), say("car"))
	dns := startDNS(t, netip.MustParseAddr("127.0.0.1"))
	p := New(Config{Resolver: dns.resolver(), Allow: []Rule{AddrPortRule(netip.MustParseAddrPort(public.Listener.Addr().String()))}})
	raw := "http://rebind.test:" + itoa(port) + "/x.car"

	if body, err := get(p, raw); err != nil || body != "car" {
		t.Fatalf("while rebind.test is allowed: %q, %v", body, err)
	}
	dns.set(netip.MustParseAddr("127.0.0.2"))
	p.Client().CloseIdleConnections() // the next fetch dials again, as a new one would
	body, err := get(p, raw)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "rebind.test resolves to 127.0.0.2, a loopback address") {
		t.Fatalf("after the rebind: %q, %v; want refused when dialed", body, err)
	}
	if secretHits.Load() != 0 {
		t.Fatalf("the secret server was reached %d times", secretHits.Load())
	}
}

func TestEveryRedirectIsCheckedLikeTheFirstURL(t *testing.T) {
	inside, insideHits := carServer(t, "127.0.0.1:0", say("secret"))
	var to atomic.Value
	first, _ := carServer(t, "127.0.0.1:0", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/here.car" {
			io.WriteString(w, "car")
			return
		}
		http.Redirect(w, r, to.Load().(string), http.StatusFound)
	})
	p := New(Config{Allow: []Rule{AddrPortRule(netip.MustParseAddrPort(first.Listener.Addr().String()))}})
	tests := []struct {
		name, to, want string
	}{
		{"a redirect to a loopback address is refused", inside.URL + "/x.car", "a redirect: 127.0.0.1 is a loopback address, refused by the fetch policy"},
		{"a redirect to the metadata service is refused", "http://169.254.169.254/latest/meta-data/", "a redirect: 169.254.169.254 is a link-local address"},
		{"a redirect to a file is refused", "file:///etc/passwd", `a redirect: scheme "file" is not http or https`},
		{"a redirect with userinfo is refused", "http://u:p@" + first.Listener.Addr().String() + "/here.car", "a redirect: userinfo"},
		{"a redirect to a decimal IP is refused", "http://2130706433/", "a redirect: host \"2130706433\" is not a canonical IP address"},
		{"a redirect within the allowed origin is followed", first.URL + "/here.car", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			to.Store(tt.to)
			body, err := get(p, first.URL+"/x.car")
			if tt.want == "" {
				if err != nil || body != "car" {
					t.Fatalf("%q, %v", body, err)
				}
				return
			}
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("%q, %v; want a refusal containing %q", body, err, tt.want)
			}
		})
	}
	if insideHits.Load() != 0 {
		t.Fatalf("a refused redirect target was reached %d times", insideHits.Load())
	}
}

func itoa(n uint16) string { return strconv.Itoa(int(n)) }
