package main

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/nats-io/nats.go"
)

func TestServeRunsNATSWithUsersAndCommandsSignInFromTheDataDir(t *testing.T) {
	data := t.TempDir()
	s := serve(t, data, "--piece-workers", "-1")
	seeds := filepath.Join(data, "nats")
	for _, role := range []string{"ferry", "publish", "admin"} {
		seed := filepath.Join(seeds, role+".nk")
		if !strings.Contains(s.stdout.String(), seed) {
			t.Errorf("serve does not print %s:\n%s", seed, s.stdout)
		}
		st, err := os.Stat(seed)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v", seed, err, st.Mode().Perm())
		}
	}
	if st, err := os.Stat(seeds); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("%s: %v", seeds, err)
	}
	if !strings.Contains(s.stdout.String(), "nats --server "+s.nats+" --nkey "+filepath.Join(seeds, "publish.nk")+" pub ferry.in.car.replicated") {
		t.Errorf("serve does not say how to publish with the stock nats CLI:\n%s", s.stdout)
	}

	t.Run("a client without credentials is refused", func(t *testing.T) {
		if nc, err := nats.Connect(s.nats); err == nil {
			nc.Close()
			t.Fatal("an anonymous client connected")
		}
	})
	ev := testutil.Replicated(4242, 5000, true)
	publish := []string{"publish", "--nats", s.nats, "--car", ev.Car, "--size", "5000", "--md5", ev.MD5, "--url", ev.URLs[0], "--piece", ev.Piece}
	t.Run("a command with no credentials says where it looked", func(t *testing.T) {
		elsewhere := t.TempDir()
		_, _, err := run(t, append(publish, "--data", elsewhere)...)
		if !errors.Is(err, nats.ErrAuthorization) || !strings.Contains(err.Error(), filepath.Join(elsewhere, "nats", "publish.nk")) {
			t.Fatalf("publish without credentials: %v", err)
		}
	})
	t.Run("publish signs in as the publish user from --data", func(t *testing.T) {
		out := mustRun(t, append(publish, "--data", data)...)
		if got := publishSummary(t, out); got.total != 1 || got.accepted != 1 {
			t.Fatalf("publish: %q", out)
		}
	})
	t.Run("an explicit --nats-nkey still works", func(t *testing.T) {
		mustRun(t, "receipts", "--nats", s.nats, "--data", t.TempDir(), "--nats-nkey", filepath.Join(seeds, "publish.nk"))
	})
	t.Run("dlq and audit sign in as admin", func(t *testing.T) {
		mustRun(t, "dlq", "--nats", s.nats, "--data", data, "list")
		mustRun(t, "audit", "--nats", s.nats, "--data", data, "--deal-size", "8MiB")
		// The log's settings decide: no flag is needed, and one that
		// disagrees is refused rather than audited into false violations.
		// The settings are in the log once the aggregator has folded the
		// event published above.
		testutil.Eventually(t, 30*time.Second, "the published event folded", func() bool {
			resp, err := http.Get("http://" + s.http + "/v1/cars/" + ev.Car)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
		mustRun(t, "audit", "--nats", s.nats, "--data", data)
		out, errOut, err := run(t, "audit", "--nats", s.nats, "--data", data, "--deal-size", "16MiB", "--max-wait", "1h")
		if !errors.Is(err, aggregator.ErrSettings) || !strings.Contains(err.Error(), "dealSize 16777216 (the log's: 8388608)") {
			t.Fatalf("audit with another deal size: %v\n%s%s", err, out, errOut)
		}
	})
	t.Run("a piece worker signs in as ferry", func(t *testing.T) {
		w := startBG(t, regexp.MustCompile(`piece-worker: \d+ workers`), "piece-worker", "--nats", s.nats, "--data", data, "--workers", "1")
		// Ready means connected; stopped this early, it may not have
		// joined the work queue yet.
		if err := w.stop(t); err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("piece-worker: %v\n%s", err, w.stderr)
		}
	})
}

func TestNATSWithoutUsersIsServedOnLoopbackOnly(t *testing.T) {
	cases := []struct {
		name, listen string
		noAuth, ok   bool
	}{
		{"users on loopback are served", "127.0.0.1:4222", false, true},
		{"users on all interfaces are served", "0.0.0.0:4222", false, true},
		{"no users on loopback are served", "127.0.0.1:4222", true, true},
		{"no users on IPv6 loopback are served", "[::1]:4222", true, true},
		{"no users on all interfaces are refused", "0.0.0.0:4222", true, false},
		{"no users on a public address are refused", "192.0.2.1:4222", true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := checkNATSExposure(tc.listen, tc.noAuth)
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, errUsage)) {
				t.Fatalf("checkNATSExposure(%q, %v) = %v", tc.listen, tc.noAuth, err)
			}
		})
	}
	_, _, err := run(t, "serve", "--data", t.TempDir(), "--http", "127.0.0.1:0", "--nats-listen", "0.0.0.0:0", "--nats-no-auth")
	if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "--nats-no-auth") {
		t.Fatalf("serve --nats-listen 0.0.0.0:0 --nats-no-auth: %v", err)
	}
}
