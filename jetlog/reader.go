package jetlog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// tailHeartbeat is how often an idle tail's consumer says it is alive.
// nats.go makes the ordered consumer again once two are missed: the
// fallback for a consumer whose server died when the stream's
// leader-elected advisory was missed (see reader).
const tailHeartbeat = time.Second

// reopenBackoff is the first and the longest wait between two tries to
// make a tail's consumer again while the stream cannot take one.
// How long a tail's consumer may deliver nothing before the stream's
// leader is asked whether it holds a message the consumer should have
// delivered (see stuck): soon after the consumer was made again (one made
// as its server was dying never delivers), then less often.
const (
	idleFirst = 250 * time.Millisecond
	idleCheck = time.Second
)

// reopenTry bounds one try: the JetStream API may not answer while its
// meta leader is being elected (nats-server's own default wait would be
// jetlog.AckWait).
const (
	reopenFirst = 20 * time.Millisecond
	reopenMost  = time.Second
	reopenTry   = 500 * time.Millisecond
)

// reader is a tail's consumer: an ordered consumer (no state on the
// server) and the goroutine that pulls from it, made again from the next
// sequence the tail has to deliver whenever the stream elects a leader.
//
// Left to itself, nats.go's ordered consumer finds a consumer lost with a
// server only by two missed heartbeats, and makes it again with backoff
// (1 s, 2 s, 4 s, … each try waiting up to 10 s for an answer), so a tail
// resumed seconds after the stream had a new leader. JetStream announces
// the election ($JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.<stream>): at
// that moment the stream takes a new consumer, so the reader drops the
// old one, goroutine and all, without waiting for it to answer, and
// opens another, unless the consumer answers at once (its server is
// alive: it goes on delivering what the new leader stores). A reconnect of the connection does the same, since an
// advisory sent while it was away is lost (the server it was on may have
// been the leader that died). And a consumer that delivers nothing for
// idleCheck while the stream's leader holds a message for it is dropped
// too (stuck). Messages of a dropped consumer are never delivered: the
// new one starts after the last message the tail delivered.
type reader struct {
	js     jetstream.JetStream
	st     jetstream.Stream
	stream string
	cfg    jetstream.OrderedConsumerConfig

	advisory *nats.Subscription
	elected  chan struct{}
	// connected tells of the connection's reconnects: advisories sent
	// while it was away are lost.
	connected chan nats.Status
	cons      jetstream.Consumer // the consumer of cur, or one made before it
	name      string             // its name
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

func newReader(js jetstream.JetStream, st jetstream.Stream, stream string, cfg jetstream.OrderedConsumerConfig) *reader {
	r := &reader{js: js, st: st, stream: stream, cfg: cfg, elected: make(chan struct{}, 1),
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

// consumer makes an ordered consumer delivering from sequence next on.
func (r *reader) consumer(ctx context.Context, next uint64) (jetstream.Consumer, error) {
	cfg := r.cfg
	cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverAllPolicy, 0
	if next > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, next
	}
	cons, err := r.st.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("consumer on %s: %w", r.stream, err)
	}
	// Its name now: CachedInfo waits for the ordered consumer's lock
	// (see drop).
	r.cons, r.name = cons, cons.CachedInfo().Name
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
	it, err := cons.Messages(PullOpt(r.stream), jetstream.PullHeartbeat(tailHeartbeat))
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
		// Not waited for: nats.go's ordered consumer holds its lock
		// while it makes its consumer again on its own (up to 10 s a
		// try), and Stop takes that lock.
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
			return p.msg, p.err
		case <-r.elected:
			if !r.alive(ctx) {
				r.drop(true)
				continue
			}
			// Its server may be the one going down: look again soon.
			r.idle = idleFirst
			idle.Reset(r.idle)
		case <-r.connected:
			r.drop(true)
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
	if len(r.cfg.FilterSubjects) == 1 {
		subject = r.cfg.FilterSubjects[0]
	}
	end, err := newEnd(ctx, r.js, r.st, r.stream, subject)
	return err == nil && end.Last >= next
}

// alive reports whether the current consumer answers at once: its server
// is up, and it delivers what the stream's new leader stores. The answer
// is awaited apart, since Info waits for the ordered consumer's lock
// (see drop).
func (r *reader) alive(ctx context.Context) bool {
	if r.cons == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, idleFirst)
	defer cancel()
	answer := make(chan error, 1)
	cons := r.cons
	go func() {
		_, err := cons.Info(ctx)
		answer <- err
	}()
	select {
	case err := <-answer:
		return err == nil
	case <-ctx.Done():
		return false
	}
}
