package node

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// Issue 19: during a server loss both ferries' /healthz answered 503 for
// seconds, the standby too, because a part that stopped while a stream
// elected its leader failed health at once. A part that fails fails
// /healthz only once it has been failing for longer than healthGrace.
func TestAFailingPartFailsHealthOnlyOnceItHasBeenFailingForTheGrace(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{errs: map[string]partErr{}, log: slog.New(slog.NewTextHandler(io.Discard, nil)), ctx: ctx}
	defer func() { cancel(); n.wg.Wait() }()
	failed := make(chan struct{}, 16)
	n.goRun("aggregator", func() error {
		failed <- struct{}{}
		return errors.New("append to aggregate log: nats: no responders available for request")
	})
	<-failed
	deadline := time.Now().Add(5 * time.Second)
	for n.failing() == nil && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n.failing() == nil {
		t.Fatal("the part's failure is not recorded")
	}
	now := time.Now()
	if err := n.failingFor(healthGrace, now); err != nil {
		t.Fatalf("health fails at once for a part that has just stopped: %v", err)
	}
	err := n.failingFor(healthGrace, now.Add(healthGrace+time.Second))
	if err == nil || !strings.Contains(err.Error(), "aggregator: append to aggregate log") || !strings.Contains(err.Error(), "failing for 3") {
		t.Fatalf("health once the part has failed for longer than the grace: %v", err)
	}
	// Restarted after its backoff, it fails again: the same run of
	// failures, counted from the first.
	<-failed
	time.Sleep(10 * time.Millisecond)
	if err := n.failingFor(healthGrace, now.Add(healthGrace+time.Second)); err == nil {
		t.Fatal("a restart that fails again started the grace over")
	}
}

func TestALostNATSConnectionFailsHealthOnlyOnceItHasBeenLostForTheGrace(t *testing.T) {
	n := &Node{}
	o := nats.GetDefaultOptions()
	for _, opt := range n.watchConnection() {
		if err := opt(&o); err != nil {
			t.Fatal(err)
		}
	}
	if d := n.disconnectedFor(time.Now()); d != 0 {
		t.Fatalf("disconnected for %s before any loss", d)
	}
	o.DisconnectedErrCB(nil, errors.New("EOF"))
	lost := time.Now()
	if d := n.disconnectedFor(lost.Add(healthGrace + time.Second)); d <= healthGrace {
		t.Fatalf("disconnected for %s", d)
	}
	o.DisconnectedErrCB(nil, errors.New("connection refused")) // a failed reconnect keeps the first loss
	if d := n.disconnectedFor(lost.Add(healthGrace + time.Second)); d <= healthGrace {
		t.Fatalf("disconnected for %s after a second loss", d)
	}
	o.ReconnectedCB(nil)
	if d := n.disconnectedFor(time.Now()); d != 0 {
		t.Fatalf("disconnected for %s after reconnecting", d)
	}
}
