// Package testutil holds helpers for ferry's tests: a real embedded NATS
// server with JetStream per test, cleaned up when the test ends.
package testutil

import (
	"context"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATS is a running embedded server and a client connected to it.
type NATS struct {
	Server *server.Server
	Conn   *nats.Conn
	JS     jetstream.JetStream
	Dir    string
}

// URL is the server's client URL.
func (n *NATS) URL() string { return n.Server.ClientURL() }

// StartNATS starts a JetStream server on 127.0.0.1 with storage in a temp
// dir and ferry's streams created; both stop when the test ends.
func StartNATS(tb testing.TB) *NATS {
	tb.Helper()
	return StartNATSIn(tb, tb.TempDir())
}

// StartNATSIn is StartNATS with storage in dir, so a test can restart a
// server on the same data.
func StartNATSIn(tb testing.TB, dir string) *NATS {
	tb.Helper()
	s, err := natsembed.Start(natsembed.Config{Dir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		tb.Fatalf("start nats: %v", err)
	}
	n := &NATS{Server: s, Dir: dir}
	tb.Cleanup(n.Stop)
	n.Conn, n.JS = Connect(tb, s.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := jetlog.EnsureStreams(ctx, n.JS, jetlog.StreamOptions{Subjects: jetlog.DefaultSubjects}); err != nil {
		tb.Fatalf("streams: %v", err)
	}
	return n
}

// Stop shuts the server down; safe to call twice.
func (n *NATS) Stop() {
	if n.Conn != nil {
		n.Conn.Close()
	}
	n.Server.Shutdown()
	n.Server.WaitForShutdown()
}

// Connect opens a client to url with opts (a sign-in), closed when the
// test ends.
func Connect(tb testing.TB, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		tb.Fatalf("connect %s: %v", url, err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetlog.NewJetStream(nc)
	if err != nil {
		tb.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// Eventually polls cond every 10ms until it holds or timeout passes.
func Eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
