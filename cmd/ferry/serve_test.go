package main

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestOpenWriteRoutesAreOnlyServedOnLoopback(t *testing.T) {
	cases := []struct {
		name, addr, token string
		ok                bool
	}{
		{"loopback without a token is served", "127.0.0.1:8080", "", true},
		{"localhost without a token is served", "localhost:8080", "", true},
		{"IPv6 loopback without a token is served", "[::1]:8080", "", true},
		{"all interfaces without a token are refused", "0.0.0.0:8080", "", false},
		{"a public address without a token is refused", "192.0.2.1:8080", "", false},
		{"all interfaces with a token are served", "0.0.0.0:8080", "t0k3n", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := checkExposure(tc.addr, tc.token, "")
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, errUsage)) {
				t.Fatalf("checkExposure(%q, %q) = %v", tc.addr, tc.token, err)
			}
		})
	}
}

func TestNATSAuthFlagsBecomeOptions(t *testing.T) {
	fs := newFlags("x", "x", nil)
	a := natsAuthFlags(fs, "")
	if err := fs.Parse([]string{"--nats-user", "u", "--nats-password", "p", "--nats-token", "t"}); err != nil {
		t.Fatal(err)
	}
	opts, err := a.options()
	if err != nil || len(opts) != 2 {
		t.Fatalf("options = %d, %v", len(opts), err)
	}
	if err := fs.Parse([]string{"--nats-tls-cert", "c.pem"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.options(); !errors.Is(err, errUsage) {
		t.Fatalf("a certificate without a key gave %v", err)
	}
}

// TestProfilesAreServedOnLoopbackOnly: --debug-addr takes loopback only,
// and what it serves is Go's profiles.
func TestProfilesAreServedOnLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:6060", "192.0.2.1:6060", "[::]:6060", "nonsense"} {
		if _, err := serveDebug(addr); !errors.Is(err, errUsage) {
			t.Errorf("serveDebug(%q) = %v, want a usage error", addr, err)
		}
	}
	addr, err := serveDebug("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr + "/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "heap profile") {
		t.Fatalf("heap profile: %d %.100s", resp.StatusCode, body)
	}
}
