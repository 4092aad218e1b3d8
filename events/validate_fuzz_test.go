package events

import (
	"net/url"
	"testing"
)

// FuzzPlainHTTPURL holds validURLs' fast path to url.Parse: whatever it
// accepts, url.Parse parses as http(s) with a host.
func FuzzPlainHTTPURL(f *testing.F) {
	for _, s := range []string{
		"https://carpark.example/bagbaiera/bagbaiera.car",
		"http://127.0.0.1/x.car",
		"https://",
		"https:///path",
		"https://host:8080/x",
		"https://user@host/x",
		"https://host/a%20b",
		"https://host/a b",
		"https://host/?q=1",
		"HTTPS://host/x",
		"https://[::1]/x",
		"http://-/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !plainHTTPURL(s) {
			return
		}
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("plainHTTPURL(%q) but url.Parse: %v", s, err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			t.Fatalf("plainHTTPURL(%q) but scheme %q, host %q", s, u.Scheme, u.Host)
		}
	})
}

// TestPlainHTTPURLTakesProducersURLs makes sure the fast path is the one
// taken for the URLs producers send, and not for ones url.Parse must judge.
func TestPlainHTTPURLTakesProducersURLs(t *testing.T) {
	for _, s := range []string{
		"https://carpark.example/bagbaieraxyz/bagbaieraxyz.car",
		"http://r2.example-bucket.com/complete/bafy.car",
	} {
		if !plainHTTPURL(s) {
			t.Errorf("plainHTTPURL(%q) = false", s)
		}
	}
	for _, s := range []string{
		"https://host:8080/x", "https://host/a%20b", "https://host/?q=1", "ftp://host/x",
		"https://", "https:///x", "https://user@host/x",
	} {
		if plainHTTPURL(s) {
			t.Errorf("plainHTTPURL(%q) = true", s)
		}
	}
}
