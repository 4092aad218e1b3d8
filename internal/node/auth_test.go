package node

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/api"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// authServer is a JetStream server that requires a user and password.
func authServer(t *testing.T) *server.Server {
	t.Helper()
	return runServer(t, &server.Options{JetStream: true, StoreDir: t.TempDir(), Username: "ferry", Password: "s3cret"})
}

// runServer runs a NATS server with opts on a free loopback port until the
// test ends.
func runServer(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(s.Shutdown)
	return s
}

func TestJoiningANATSServerThatRequiresCredentials(t *testing.T) {
	s := authServer(t)
	cfg := testConfig(t.TempDir(), s.ClientURL())
	cfg.NATSOptions = []nats.Option{nats.UserInfo("ferry", "wrong")}
	if n, err := Start(context.Background(), cfg); err == nil {
		n.Close()
		t.Fatal("ferry joined with a wrong password")
	}
	cfg.NATSOptions = []nats.Option{nats.UserInfo("ferry", "s3cret")}
	n := startNode(t, cfg)
	testutil.Eventually(t, 10*time.Second, "the aggregator to lead", func() bool { return n.Runner.Status().Leader })
}

func TestTokensGuardWritesReportsAndOptionallyReads(t *testing.T) {
	nt := testutil.StartNATS(t)
	cfg := testConfig(t.TempDir(), nt.URL())
	cfg.WriteToken, cfg.ReportToken, cfg.ReadToken = "w", "r", "g"
	n := startNode(t, cfg)
	base := "http://" + n.HTTPAddr()
	car := testutil.CarCID(1).String()
	cases := []struct {
		name, method, path, token string
		status                    int
	}{
		{"a write without a token is refused", "POST", "/v1/cars", "", 401},
		{"a write with the report token is refused", "POST", "/v1/cars", "r", 401},
		{"a write with the write token is taken", "POST", "/v1/cars", "w", 422},
		{"a close without a token is refused", "POST", "/v1/aggregates/1/close", "", 401},
		{"a report with the write token is refused", "POST", "/v1/deals/report", "w", 401},
		{"a read without the read token is refused", "GET", "/v1/cars/" + car, "", 401},
		{"a read with the read token is answered", "GET", "/v1/cars/" + car, "g", 404},
		{"a read with the write token is answered", "GET", "/v1/cars/" + car, "w", 404},
		{"a read with the report token is refused", "GET", "/v1/cars/" + car, "r", 401},
		{"a write with the read token is refused", "POST", "/v1/cars", "g", 401},
		{"the dashboard with the write token is answered", "GET", "/", "w", 200},
		{"the dashboard without a token is refused", "GET", "/", "", 401},
		{"health needs no token", "GET", "/healthz", "", 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader(`{"car":"x"}`))
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
		})
	}
}

func TestAFloodOfWritesIsAnswered429NotQueued(t *testing.T) {
	nt := testutil.StartNATS(t)
	n := startNode(t, testConfig(t.TempDir(), nt.URL()))
	url := "http://" + n.HTTPAddr() + "/v1/cars"
	// Writers that never finish their bodies hold every write slot.
	var pipes []*io.PipeWriter
	t.Cleanup(func() {
		for _, p := range pipes {
			p.Close()
		}
	})
	// A few more writers than slots: under a loaded machine (the race
	// detector, parallel packages) one of exactly MaxWritesInFlight was
	// seen not to be in its handler after 10 s; the extra ones either hold
	// a slot too or are turned away, which is the point.
	for range api.MaxWritesInFlight + 4 {
		pr, pw := io.Pipe()
		pipes = append(pipes, pw)
		go func() {
			if resp, err := http.Post(url, "application/json", pr); err == nil {
				resp.Body.Close()
			}
		}()
		pw.Write([]byte("[")) // the handler is now reading this body
	}
	// A probe that hangs must not eat the whole wait, and a failure should
	// say what the probes were answered.
	probe := &http.Client{Timeout: 5 * time.Second}
	var last string
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := probe.Post(url, "application/json", strings.NewReader(`{"car":"x"}`))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") != "" {
				return
			}
			last = fmt.Sprintf("%d (Retry-After %q)", resp.StatusCode, resp.Header.Get("Retry-After"))
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("no 429 within 30 s once every write slot was taken; the last probe got %s", last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
