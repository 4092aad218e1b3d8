package jetlog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// tailHeartbeat is how often an idle tail's consumer says it is alive;
// two missed make the reader make its consumer again.
const tailHeartbeat = time.Second

// How long a tail's consumer may deliver nothing before the stream's
// leader is asked whether it holds a message the consumer should have
// delivered (see stuck): soon after the consumer was made again or its
// stream or connection changed, then less often.
const (
	idleFirst = 250 * time.Millisecond
	idleCheck = time.Second
)

// The tries to make a tail's consumer again while the cluster does not
// take one: the first and the longest wait between two, and the bound of
// one (the JetStream API leaves creations unanswered for a while after a
// server's death; nats.go would wait jetlog.AckWait).
const (
	reopenFirst = 20 * time.Millisecond
	reopenMost  = time.Second
	reopenTry   = 500 * time.Millisecond
)

// reader is a tail's consumer: an ephemeral consumer without
// acknowledgements (no state kept on disk), the goroutine that pulls from
// it, and the bookkeeping nats.go's ordered consumer would do, done here
// so that a tail follows a stream's new leader at once. The consumer is
// made again, from the next sequence the tail has to deliver, when:
//
//   - the stream elects a leader (its advisory,
//     $JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.<stream>) or the connection
//     reconnects (an advisory sent while it was away is lost), and the
//     consumer does not answer within idleFirst: its server died;
//   - a message arrives out of the consumer's own order (one sent while
//     the connection was away is lost for good without acknowledgements);
//   - the pull fails or its heartbeats stop;
//   - it delivers nothing for a while although the stream's leader holds
//     a message for it (stuck).
//
// nats.go's ordered consumer finds a lost consumer only by two missed
// heartbeats, remakes its consumer on every reconnect (which needs the
// JetStream meta leader), and retries with a backoff of 1, 2, 4 s… each
// try waiting up to 10 s, all under a lock its Stop and Info wait for: a
// tail on it resumed seconds after the stream had a new leader. A dropped
// consumer's goroutine is not waited for, and its messages are never
// delivered: the new consumer starts after the last message the tail
// delivered.
type reader struct {
	js     jetstream.JetStream
	st     jetstream.Stream
	stream string
	filter []string // the subjects of the tail (none: all)

	advisory *nats.Subscription
	elected  chan struct{}
	// connected tells of the connection's reconnects: advisories sent
	// while it was away are lost.
	connected chan nats.Status
	cons      jetstream.Consumer // the consumer of cur, or one made before it
	name      string             // its name
	delivered uint64             // the consumer's sequence of the last message it delivered
	cur       *pull
	opened    bool          // a consumer was pulled from: later failures are retried
	idle      time.Duration // how long next waits before asking whether the consumer is stuck
}

// pull is one consumer's goroutine and what it pulled.
type pull struct {
	it   jetstream.MessagesContext
	out  chan pulled
	done chan struct{}
}

type pulled struct {
	msg jetstream.Msg
	err error
}

// LeaderElectedAdvisory is the subject on which JetStream announces that
// stream has elected a leader.
func LeaderElectedAdvisory(stream string) string {
	return "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED." + stream
}

func newReader(js jetstream.JetStream, st jetstream.Stream, stream string, filter []string) *reader {
	r := &reader{js: js, st: st, stream: stream, filter: filter, elected: make(chan struct{}, 1),
		connected: js.Conn().StatusChanged(nats.CONNECTED)}
	// Without the advisory (a user not allowed to subscribe to it) the
	// heartbeats still recover the tail, later.
	r.advisory, _ = js.Conn().Subscribe(LeaderElectedAdvisory(stream), func(*nats.Msg) {
		select {
		case r.elected <- struct{}{}:
		default:
		}
	})
	return r
}

// consumer makes a consumer delivering from sequence next on: what
// nats.go's ordered consumer makes (ephemeral, in memory, one replica, no
// acknowledgements), kept by the reader itself.
func (r *reader) consumer(ctx context.Context, next uint64) (jetstream.Consumer, error) {
	cfg := jetstream.ConsumerConfig{
		DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckNonePolicy,
		InactiveThreshold: 5 * time.Minute, Replicas: 1, MemoryStorage: true,
	}
	if next > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, next
	}
	if f := r.filter; len(f) == 1 {
		cfg.FilterSubject = f[0]
	} else {
		cfg.FilterSubjects = f
	}
	cons, err := r.st.CreateConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("consumer on %s: %w", r.stream, err)
	}
	r.cons, r.name, r.delivered = cons, cons.CachedInfo().Name, 0
	return cons, nil
}

// open starts pulling from sequence next on, with the consumer made
// before if there is one.
func (r *reader) open(ctx context.Context, next uint64) error {
	cons := r.cons
	if cons == nil {
		cctx, cancel := ctx, context.CancelFunc(func() {})
		if r.opened {
			cctx, cancel = context.WithTimeout(ctx, reopenTry)
		}
		var err error
		cons, err = r.consumer(cctx, next)
		cancel()
		if err != nil {
			return err
		}
	}
	it, err := cons.Messages(PullOpt(r.stream), jetstream.PullHeartbeat(tailHeartbeat), jetstream.WithMessagesErrOnMissingHeartbeat(true))
	if err != nil {
		r.cons = nil
		return fmt.Errorf("consume %s: %w", r.stream, err)
	}
	p := &pull{it: it, out: make(chan pulled), done: make(chan struct{})}
	go func() {
		for {
			msg, err := it.Next()
			select {
			case p.out <- pulled{msg, err}:
			case <-p.done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	r.cur, r.idle = p, idleCheck
	if r.opened {
		r.idle = idleFirst
	}
	r.opened = true
	return nil
}

// drop stops the current consumer without waiting for its goroutine.
// With del it deletes the consumer meanwhile, as nats.go does when it
// makes an ordered consumer again: one left on a server that died would
// stay assigned until its inactivity threshold.
func (r *reader) drop(del bool) {
	if r.cur != nil {
		close(r.cur.done)
		// Not waited for: a pull to a dead server may take its time.
		go r.cur.it.Stop()
		r.cur = nil
	}
	if r.cons != nil && del {
		name := r.name
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = r.js.DeleteConsumer(ctx, r.stream, name)
		}()
	}
	r.cons = nil
}

func (r *reader) stop() {
	r.drop(false)
	r.js.Conn().RemoveStatusListener(r.connected)
	if r.advisory != nil {
		_ = r.advisory.Unsubscribe()
	}
}

// next returns the next message, next being the sequence the tail has to
// deliver next (where a consumer made again starts). It waits up to wait
// (0: without end) and then fails with nats.ErrTimeout.
func (r *reader) next(ctx context.Context, wait time.Duration, next uint64) (jetstream.Msg, error) {
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	idle := time.NewTimer(max(r.idle, idleFirst))
	defer idle.Stop()
	backoff := reopenFirst
	for {
		if r.cur == nil {
			err := r.open(ctx, next)
			if err != nil && (!r.opened || errors.Is(err, jetstream.ErrStreamNotFound)) {
				return nil, err
			}
			if err != nil {
				// The stream may have no leader yet, or the meta
				// leader may be changing: try again.
				select {
				case <-time.After(backoff):
					backoff = min(2*backoff, reopenMost)
					continue
				case <-timeout:
					return nil, nats.ErrTimeout
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			backoff = reopenFirst
			idle.Reset(r.idle)
		}
		select {
		case p := <-r.cur.out:
			if p.err != nil {
				// The consumer is gone or silent (its server died, the
				// heartbeats stopped): make it again.
				r.drop(true)
				continue
			}
			if !r.inOrder(p.msg) {
				r.drop(true)
				continue
			}
			return p.msg, nil
		case <-r.elected:
			if !r.alive(ctx) {
				r.drop(true)
				continue
			}
			// Its server may be the one going down: look again soon.
			r.idle = idleFirst
			idle.Reset(r.idle)
		case <-r.connected:
			// Messages sent while the connection was away are lost: the
			// next one shows the gap (inOrder), or the silence does
			// (stuck). A consumer whose server died does not answer.
			if !r.alive(ctx) {
				r.drop(true)
				continue
			}
			r.idle = idleFirst
			idle.Reset(r.idle)
		case <-idle.C:
			if r.stuck(ctx, next) {
				r.drop(true)
			} else {
				r.idle = min(2*r.idle, idleCheck)
			}
			idle.Reset(r.idle)
		case <-timeout:
			return nil, nats.ErrTimeout
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// stuck reports whether the stream's leader holds a message of the tail
// at or after next while the consumer has been delivering nothing: the
// consumer is lost (its server died while the advisory and the reconnect
// went unseen, and nats.go's own recovery waits out its backoff) or sits
// on a replica that is behind. A leader that does not answer at once is
// no proof: the tail waits on.
func (r *reader) stuck(ctx context.Context, next uint64) bool {
	ctx, cancel := context.WithTimeout(ctx, reopenTry)
	defer cancel()
	var subject string
	if len(r.filter) == 1 {
		subject = r.filter[0]
	}
	end, err := newEnd(ctx, r.js, r.st, r.stream, subject)
	return err == nil && end.Last >= next
}

// alive reports whether the current consumer answers at once: its server
// is up, and it delivers what the stream's new leader stores.
func (r *reader) alive(ctx context.Context) bool {
	if r.cons == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, idleFirst)
	defer cancel()
	_, err := r.cons.Info(ctx)
	return err == nil
}

// inOrder reports whether msg is the consumer's next delivery: with no
// acknowledgements, a message lost on the way (sent while the
// connection was away) is never sent again, and the consumer's own
// sequence shows the gap.
func (r *reader) inOrder(msg jetstream.Msg) bool {
	meta, err := msg.Metadata()
	if err != nil || meta.Sequence.Consumer != r.delivered+1 {
		return false
	}
	r.delivered = meta.Sequence.Consumer
	return true
}
