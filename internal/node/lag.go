package node

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultMaxProjectionLag is how long the read models may stay behind the
// aggregate log before /healthz fails (`ferry serve --max-projection-lag`).
const DefaultMaxProjectionLag = 2 * time.Minute

// lagPoll is how often lagWatch asks the aggregate log's leader for its
// last sequence.
const lagPoll = time.Second

// lagWatch follows how far the read models are behind the aggregate log
// as its stream leader holds it. The projector's consumer may sit on a
// replica that is behind, or has stopped applying; its reads then end in
// silence, and only the leader's last sequence shows it. The lag's age is
// how long ago the watch first saw a last sequence the read models have
// still not applied.
//
// Goroutines: run polls; the rest is read by /metrics and /healthz.
type lagWatch struct {
	js      jetstream.JetStream
	applied func() uint64 // the aggregate log sequence the read models applied
	max     time.Duration // 0: the lag never fails health
	now     func() time.Time

	mu     sync.Mutex
	last   uint64    // the log's last sequence at the latest poll
	target uint64    // a last sequence seen and not applied yet (0: none)
	since  time.Time // when target was seen
}

func newLagWatch(js jetstream.JetStream, applied func() uint64, max time.Duration) *lagWatch {
	return &lagWatch{js: js, applied: applied, max: max, now: time.Now}
}

func (w *lagWatch) run(ctx context.Context) error {
	t := time.NewTicker(lagPoll)
	defer t.Stop()
	for {
		// A failed poll leaves the last one standing: NATS being away
		// fails /healthz on its own.
		_ = w.poll(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// poll asks the leader for the log's last sequence.
func (w *lagWatch) poll(ctx context.Context) error {
	last, err := jetlog.LastSeq(ctx, w.js, jetlog.StreamAgg, "")
	if err != nil {
		return err
	}
	applied := w.applied()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.last = last
	if applied >= w.target {
		// The old target is reached; the next is the log's end now.
		w.target = 0
		if applied < last {
			w.target, w.since = last, w.now()
		}
	}
	return nil
}

// behind reports whether the log goes past applied, asking the stream's
// leader now (for api.API.Behind, which passes what the read models had
// applied when it read them).
func (w *lagWatch) behind(ctx context.Context, applied uint64) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	last, err := jetlog.LastSeq(ctx, w.js, jetlog.StreamAgg, "")
	if err != nil {
		return false, err
	}
	return applied < last, nil
}

// lag is how many aggregate log messages the read models are behind its
// last sequence at the latest poll, and for how long they have been.
func (w *lagWatch) lag() (uint64, time.Duration) {
	applied := w.applied()
	w.mu.Lock()
	defer w.mu.Unlock()
	var msgs uint64
	if w.last > applied {
		msgs = w.last - applied
	}
	if w.target == 0 || applied >= w.target {
		return msgs, 0
	}
	return msgs, w.now().Sub(w.since)
}

// Err says that the read models have been behind for longer than the
// bound, or is nil.
func (w *lagWatch) Err() error {
	msgs, age := w.lag()
	if w.max <= 0 || age <= w.max {
		return nil
	}
	return fmt.Errorf("read models behind the aggregate log by %d messages (applied through sequence %d) for %s, over the %s bound (--max-projection-lag)",
		msgs, w.applied(), age.Truncate(time.Second), w.max)
}
