package aggregator

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// An append is sent again, the same message under the same message id
// and expected last sequence, until the stream settles it: stored, or
// refused because another writer's message is in the way.
const (
	// resendEvery is how long one try waits for its acknowledgement. A
	// stream that lost its leader answers nothing; the try after its
	// election is answered at once, so this bounds how late after the
	// election the append settles.
	resendEvery = 500 * time.Millisecond
	// settleWithin bounds the tries: past it the append is
	// ErrAppendUnsettled and the runner steps down. It outlasts a Raft
	// election after a server's death (nats-server's election timeout is
	// 4 to 9 s).
	settleWithin = 3 * jetlog.AckWait
)

// appending is one append to the aggregate log: a group's message, sent
// after the message at sequence after. A goroutine sends it and sends it
// again until it settles; done receives the outcome, once.
type appending struct {
	subject string
	data    []byte
	after   uint64
	lastIn  uint64
	done    chan error
}

// append starts the append of g after the message at seq after. Each try
// waits for l's fence (nil: no lease, in tests). The append ends with ctx.
func (r *Runner) append(ctx context.Context, l *lease, g group, after uint64) *appending {
	subject := r.cfg.Subjects.Decisions()
	if g.deals {
		subject = r.cfg.Subjects.Deals()
	}
	a := &appending{subject: subject, data: bytes.Clone(g.msg), after: after, lastIn: g.lastIn, done: make(chan error, 1)}
	go func() { a.done <- r.send(ctx, l, a) }()
	return a
}

// appendOpts are the guard of an append after the message at seq after
// whose last batch is input lastIn's: the expected last sequence alone
// (see apply), and the message id, which makes a repeat of an append
// already stored a duplicate (see send).
func appendOpts(after, lastIn uint64) []jetstream.PublishOpt {
	return []jetstream.PublishOpt{jetstream.WithExpectLastSequence(after), jetstream.WithMsgID(messageID(lastIn))}
}

// send sends a until it settles. Every try is idempotent: a replicated
// stream dedupes the message id (within aggDuplicates) ahead of checking
// the expected last sequence, so a try after one that was stored is
// answered as a duplicate at sequence after+1, which send takes as
// stored. Past the window, or on a single server (which checks the
// sequence first), it is refused as a conflict instead; send then asks
// the leader whose message sits at after+1. A message there with a's id
// is a's own, or another writer's fold of exactly the same inputs after
// the same message (the fold is deterministic), so the log is as a would
// have made it; any other is another writer's (ErrDeposed); none yet
// settles nothing (see storedBefore).
//
// The tries in flight are the last two: the acknowledgement of a slow try
// still counts once the next is sent (which is then answered
// jsDuplicateInProcess).
func (r *Runner) send(ctx context.Context, l *lease, a *appending) error {
	first := time.Now()
	tries := 0
	var cur, prev jetstream.PubAckFuture
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-retry.C:
			if tries > 0 && time.Since(first) > settleWithin {
				return fmt.Errorf("%w: %d tries in %v", ErrAppendUnsettled, tries, time.Since(first).Round(time.Millisecond))
			}
			if l != nil {
				if err := l.fence(ctx); err != nil {
					return err
				}
			}
			tries++
			msg := nats.NewMsg(a.subject)
			msg.Data = a.data
			f, err := r.js.PublishMsgAsync(msg, appendOpts(a.after, a.lastIn)...)
			switch {
			case err == nil:
				prev, cur = cur, f
			case !jetlog.Unanswered(err):
				return fmt.Errorf("append the message ending with input %d: %w", a.lastIn, err)
			}
			retry.Reset(resendEvery)
			continue
		case ack := <-okChan(cur):
			return a.acked(ack)
		case ack := <-okChan(prev):
			return a.acked(ack)
		case err = <-errChan(cur):
			cur = nil
		case err = <-errChan(prev):
			prev = nil
		}
		// A try was refused.
		switch {
		case jetlog.IsConflict(err):
			if done, err := r.storedBefore(ctx, a, err); done {
				return err
			}
		case jetlog.Unanswered(err):
			// The next try, or the one in flight, settles it.
		default:
			return fmt.Errorf("append to aggregate log: %w", err)
		}
	}
}

// acked is the outcome of an acknowledgement of a.
func (a *appending) acked(ack *jetstream.PubAck) error {
	switch {
	case ack.Sequence == a.after+1:
		return nil
	case ack.Duplicate:
		return fmt.Errorf("%w: its message id was stored at %d, not %d", ErrDeposed, ack.Sequence, a.after+1)
	}
	return fmt.Errorf("%w: stored at %d, expected %d", ErrDeposed, ack.Sequence, a.after+1)
}

// storedBefore is the outcome of a conflict answered to a try of a, as
// the message at after+1 says: settled and nil if it carries a's id,
// settled and ErrDeposed if it is another's. Without a message there (or
// without the leader's answer) nothing is settled: a leader that lost
// its quorum counts a try it proposed but could not store, and refuses
// the next one, until it steps down.
func (r *Runner) storedBefore(ctx context.Context, a *appending, conflict error) (bool, error) {
	gctx, cancel := context.WithTimeout(ctx, resendEvery)
	defer cancel()
	id, ok, err := jetlog.MsgID(gctx, r.js, jetlog.StreamAgg, a.after+1)
	switch {
	case err != nil || !ok:
		return false, nil
	case id == messageID(a.lastIn):
		return true, nil
	}
	return true, fmt.Errorf("%w: %v (message %d is %q)", ErrDeposed, conflict, a.after+1, id)
}

// waitAck waits until a settles: within settleWithin, or at once when
// the context the append was started with ends.
func waitAck(a *appending) error { return <-a.done }

func doneChan(a *appending) <-chan error {
	if a == nil {
		return nil
	}
	return a.done
}

func okChan(f jetstream.PubAckFuture) <-chan *jetstream.PubAck {
	if f == nil {
		return nil
	}
	return f.Ok()
}

func errChan(f jetstream.PubAckFuture) <-chan error {
	if f == nil {
		return nil
	}
	return f.Err()
}
