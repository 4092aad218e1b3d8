package node

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
)

// healthGrace is how long a part may keep failing, and the NATS
// connection stay lost, before /healthz fails for it.
//
// On a NATS cluster a server's death makes the streams it led elect new
// leaders, and the clients connected to it reconnect to another: parts
// whose reads or appends were in flight stop and are restarted, on every
// ferry at once, the standby too. That is the cluster healing itself; the
// read models still answer, and a write that fails meanwhile says so to
// its caller. Failing /healthz for it would take every ferry out of a
// load balancer at the same moment. The grace is longer than JetStream's
// leader election plus the parts' first restarts, and far shorter than an
// outage an operator must hear about: a part that keeps failing, or a
// connection that does not come back, fails /healthz once it has lasted
// the grace. A full disk and read models behind past their bound fail it
// at once, as before.
const healthGrace = 30 * time.Second

// partErr is why a part is down, and since when it has been failing: the
// first failure of a run of failures with no run longer than healthGrace
// between them.
type partErr struct {
	err   error
	since time.Time
}

func (n *Node) health() error {
	if err := n.disk.Err(); err != nil {
		return err
	}
	now := time.Now()
	if err := n.failingFor(healthGrace, now); err != nil {
		return err
	}
	if !n.Conn.IsConnected() {
		if d := n.disconnectedFor(now); d > healthGrace {
			return fmt.Errorf("not connected to NATS for %s", d.Truncate(time.Second))
		}
	}
	return n.lag.Err()
}

// failingFor is an error naming the parts down now that have been failing
// for longer than grace, or nil.
func (n *Node) failingFor(grace time.Duration, now time.Time) error {
	n.errMu.Lock()
	defer n.errMu.Unlock()
	var errs []error
	for part, pe := range n.errs {
		if d := now.Sub(pe.since); d >= grace {
			if grace > 0 {
				errs = append(errs, fmt.Errorf("%s: %w (failing for %s)", part, pe.err, d.Truncate(time.Second)))
			} else {
				errs = append(errs, fmt.Errorf("%s: %w", part, pe.err))
			}
		}
	}
	// Map order is random; the answer should not be.
	slices.SortFunc(errs, func(a, b error) int {
		switch {
		case a.Error() < b.Error():
			return -1
		case a.Error() > b.Error():
			return 1
		}
		return 0
	})
	return errors.Join(errs...)
}

// watchConnection notes when the connection to NATS is lost
// and when it is back, for disconnectedFor.
func (n *Node) watchConnection() []nats.Option {
	return []nats.Option{
		nats.DisconnectErrHandler(func(*nats.Conn, error) {
			n.disconnected.CompareAndSwap(0, time.Now().UnixNano())
		}),
		nats.ReconnectHandler(func(*nats.Conn) { n.disconnected.Store(0) }),
	}
}

// disconnectedFor is how long the connection has been lost (0 when the
// loss has not been noted).
func (n *Node) disconnectedFor(now time.Time) time.Duration {
	since := n.disconnected.Load()
	if since == 0 {
		return 0
	}
	return now.Sub(time.Unix(0, since))
}
