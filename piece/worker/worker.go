// Package worker runs piece workers: they take CARs that wait for their
// piece CID from a JetStream work queue shared by any number of workers on
// any number of machines, fetch each CAR once, check it and compute its
// piece in the same pass, and report the outcome as an input event.
//
// # Rules
//
//   - A CAR is worked on by one worker at a time: the work queue holds one
//     item per CAR, and a worker keeps its claim alive with InProgress
//     while it downloads.
//   - Only http and https URLs are fetched, through Config.Fetch.Policy
//     (urlpolicy): a work item names what to fetch, not what may be
//     fetched, so a forged item cannot make a worker read a file or reach
//     a private address.
//   - Bad bytes, or a refusal by the fetch policy, from every source end
//     the work at once with car.invalid; anything else (a source down, a
//     stall) is retried with backoff, and
//     when the deliveries run out the CAR is rejected with the last reason
//     and the item is kept on the dead-letter stream for ferry dlq replay.
//   - A reason names sources by index (urls[0]) and says what was refused
//     or wrong, never what a source answered beyond that
//     (piece.FetchError.Reason): a publisher must not learn through
//     reasons what a worker's network holds.
//   - The outcome is published before the item is acknowledged, so a
//     crash in between repeats the work, never loses it; the fold ignores
//     a second car.piece for a CAR that has its piece.
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/piece"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config of a pool of workers.
type Config struct {
	Subjects jetlog.Subjects
	// Workers is the number of CARs worked on at once.
	Workers int
	// MaxSize bounds a CAR; larger ones are invalid.
	MaxSize uint64
	// Fetch bounds each download (total timeout, stall timeout) and holds
	// the fetch policy (nil: urlpolicy.Default).
	Fetch piece.FetchOptions
	// MaxDeliver is how often an item is tried before it is dead.
	MaxDeliver int
	// Backoff is the wait before each retry, by attempt; the last repeats.
	Backoff []time.Duration
	// AckWait is how long a worker may stay silent before its item goes
	// to another; workers heartbeat at a third of it.
	AckWait time.Duration
	Log     *slog.Logger
}

func (c *Config) defaults() {
	if c.Workers <= 0 {
		c.Workers = 1
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = 5
	}
	if len(c.Backoff) == 0 {
		c.Backoff = []time.Duration{5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute}
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Subjects.Prefix == "" {
		c.Subjects = jetlog.DefaultSubjects
	}
}

// EnsureConsumer creates or updates the durable consumer all workers share.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.Consumer, error) {
	cfg.defaults()
	c, err := js.CreateOrUpdateConsumer(ctx, jetlog.StreamWork, jetstream.ConsumerConfig{
		Durable: jetlog.WorkConsumer, FilterSubject: cfg.Subjects.Works(), AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: cfg.AckWait, MaxDeliver: -1, MaxAckPending: 1000,
		Description: "ferry piece workers",
	})
	if err != nil {
		return nil, fmt.Errorf("piece work consumer: %w", err)
	}
	return c, nil
}

// Enqueue puts a CAR's work item on the queue. The queue keeps at most one
// item per CAR, so enqueuing a CAR that waits already changes nothing.
func Enqueue(ctx context.Context, js jetstream.JetStream, sub jetlog.Subjects, ev *events.CarReplicated) error {
	data, err := events.Encode(ev)
	if err != nil {
		return err
	}
	_, err = js.Publish(ctx, sub.Work(ev.Car), data)
	if err != nil && isPerSubjectFull(err) {
		return nil
	}
	return err
}

// isPerSubjectFull is the stream refusing a second item for a CAR. The
// server reports it as a store failure (10077) with this description.
func isPerSubjectFull(err error) bool {
	return err != nil && strings.Contains(err.Error(), "maximum messages per subject exceeded")
}

// Pool is a running set of workers.
type Pool struct {
	js  jetstream.JetStream
	cfg Config
	pub *jetlog.Publisher
}

// New returns a pool on js.
func New(js jetstream.JetStream, cfg Config) *Pool {
	cfg.defaults()
	return &Pool{js: js, cfg: cfg, pub: jetlog.NewPublisher(js, cfg.Subjects)}
}

// Run works until ctx ends.
func (p *Pool) Run(ctx context.Context) error {
	cons, err := EnsureConsumer(ctx, p.js, p.cfg)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	for range p.cfg.Workers {
		wg.Go(func() { p.loop(ctx, cons) })
	}
	wg.Wait()
	return nil
}

func (p *Pool) loop(ctx context.Context, cons jetstream.Consumer) {
	for ctx.Err() == nil {
		// One item at a time, pulled only when this worker is free: a
		// prefetched item would wait unheartbeaten and go to a second worker.
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		batch, err := cons.Fetch(1, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			if ctx.Err() == nil {
				p.cfg.Log.Warn("piece work fetch failed", "err", err)
				sleep(ctx, time.Second)
			}
			continue
		}
		for msg := range batch.Messages() {
			p.work(ctx, msg)
		}
		cancel()
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// work handles one item.
func (p *Pool) work(ctx context.Context, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		_ = msg.Term()
		return
	}
	var ev events.CarReplicated
	if err := json.Unmarshal(msg.Data(), &ev); err != nil || ev.Car == "" {
		p.cfg.Log.Error("piece work item unreadable; dropped", "seq", meta.Sequence.Stream, "err", err)
		_ = msg.TermWithReason("unreadable work item")
		return
	}
	log := p.cfg.Log.With("car", ev.Car, "delivery", meta.NumDelivered)
	res, err := p.check(ctx, msg, &ev)
	if ctx.Err() != nil {
		return // shutting down: the item is redelivered to someone else
	}
	switch {
	case err == nil:
		out := &events.CarPiece{Car: ev.Car, Piece: res.Commitment.MustV2().String()}
		p.finish(ctx, msg, out, log)
		log.Info("piece computed", "piece", out.Piece, "size", res.Size)
	case allInvalid(err):
		p.finish(ctx, msg, &events.CarInvalid{Car: ev.Car, Reason: reason(err)}, log)
		log.Warn("CAR invalid", "reason", err)
	case int(meta.NumDelivered) >= p.cfg.MaxDeliver:
		p.dead(ctx, msg, &ev, err, log)
	default:
		delay := p.cfg.Backoff[min(int(meta.NumDelivered)-1, len(p.cfg.Backoff)-1)]
		log.Warn("piece work failed; will retry", "err", err, "in", delay)
		_ = msg.NakWithDelay(delay)
	}
}

// check fetches and checks the CAR, heartbeating while it runs.
func (p *Pool) check(ctx context.Context, msg jetstream.Msg, ev *events.CarReplicated) (*piece.Result, error) {
	hctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		t := time.NewTicker(p.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	return piece.FetchAndCheck(ctx, ev.URLs, p.cfg.Fetch, piece.CheckOptions{
		MaxSize: p.cfg.MaxSize, ExpectSize: ev.Size, ExpectMD5: ev.MD5,
	})
}

// allInvalid: every source gave bad bytes, so no retry can help.
func allInvalid(err error) bool {
	if fe, ok := errors.AsType[*piece.FetchError](err); ok {
		return fe.Invalid()
	}
	return piece.IsInvalid(err)
}

// reason is what a car.invalid event and a dead letter say about err:
// what was refused or wrong, never what a source answered beyond that
// (piece.FetchError.Reason); the log keeps the whole error.
func reason(err error) string {
	if fe, ok := errors.AsType[*piece.FetchError](err); ok {
		return fe.Reason()
	}
	return piece.Describe(err)
}

// finish publishes the outcome, then acknowledges the item.
func (p *Pool) finish(ctx context.Context, msg jetstream.Msg, out events.Event, log *slog.Logger) {
	if _, err := p.pub.Publish(ctx, out); err != nil {
		log.Error("piece outcome not published; item will be redelivered", "err", err)
		_ = msg.NakWithDelay(p.cfg.Backoff[0])
		return
	}
	if err := msg.DoubleAck(ctx); err != nil {
		log.Warn("piece work ack failed", "err", err)
	}
}

// dead keeps the item on the dead-letter stream and rejects the CAR with
// the last reason.
func (p *Pool) dead(ctx context.Context, msg jetstream.Msg, ev *events.CarReplicated, cause error, log *slog.Logger) {
	meta, _ := msg.Metadata()
	dl := nats.NewMsg(p.cfg.Subjects.DeadLetter(ev.Car))
	dl.Data = msg.Data()
	dl.Header.Set(HeaderReason, reason(cause))
	dl.Header.Set(HeaderDeliveries, strconv.FormatUint(meta.NumDelivered, 10))
	dl.Header.Set(HeaderFailedAt, time.Now().UTC().Format(time.RFC3339))
	if _, err := p.js.PublishMsg(ctx, dl); err != nil {
		log.Error("dead letter not stored; item will be redelivered", "err", err)
		_ = msg.NakWithDelay(p.cfg.Backoff[0])
		return
	}
	why := fmt.Sprintf("gave up after %d attempts: %s", meta.NumDelivered, reason(cause))
	p.finish(ctx, msg, &events.CarInvalid{Car: ev.Car, Reason: why}, log)
	log.Error("piece work dead", "reason", why, "err", cause)
}

// Headers of dead letters.
const (
	HeaderReason     = "Ferry-Reason"
	HeaderDeliveries = "Ferry-Deliveries"
	HeaderFailedAt   = "Ferry-Failed-At"
)
