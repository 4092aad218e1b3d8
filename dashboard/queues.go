package dashboard

import (
	"context"
	"errors"

	"github.com/ferry-dev/ferry/workqueue"
	"github.com/nats-io/nats.go/jetstream"
)

// queueState is one work queue as JetStream holds it now.
type queueState struct {
	Name string
	// Exists is false while the queue's stream has never been made (its
	// workers never ran on this NATS).
	Exists bool
	// Waiting counts the items in the stream, in flight ones included;
	// InFlight those delivered and not yet acknowledged; Dead the dead
	// letters.
	Waiting, InFlight, Dead uint64
}

// queueStates reads each queue's stream, consumer and dead-letter stream.
func queueStates(ctx context.Context, js jetstream.JetStream, queues []workqueue.Queue) ([]queueState, error) {
	out := make([]queueState, 0, len(queues))
	for _, q := range queues {
		qs := queueState{Name: q.Name}
		st, err := js.Stream(ctx, q.Stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			out = append(out, qs)
			continue
		}
		if err != nil {
			return out, err
		}
		qs.Exists, qs.Waiting = true, st.CachedInfo().State.Msgs
		if c, err := st.Consumer(ctx, q.Consumer); err == nil {
			qs.InFlight = uint64(c.CachedInfo().NumAckPending)
		}
		if dead, err := js.Stream(ctx, q.DeadStream); err == nil {
			qs.Dead = dead.CachedInfo().State.Msgs
		}
		out = append(out, qs)
	}
	return out, nil
}
