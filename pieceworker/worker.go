// Package pieceworker runs piece workers: they take CARs that wait for
// their piece CID from the piece work queue (workqueue, shared by any
// number of workers on any number of machines), fetch each CAR once,
// check it and compute its piece in the same pass, and report the outcome
// as an input event.
//
// # Rules
//
//   - The work queue's rules hold (see workqueue): one item per CAR, one
//     worker at a time on it, InProgress heartbeats while it downloads,
//     backoff by attempt, a dead letter after the last.
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
//     (carcheck.FetchError.Reason): a publisher must not learn through
//     reasons what a worker's network holds.
//   - The outcome is published before the item is acknowledged, so a
//     crash in between repeats the work, never loses it; the fold ignores
//     a second car.piece for a CAR that has its piece.
package pieceworker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ferry-dev/ferry/carcheck"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/workqueue"
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
	Fetch carcheck.FetchOptions
	// MaxDeliver is how often an item is tried before it is dead.
	MaxDeliver int
	// Backoff is the wait before each retry, by attempt; the last repeats.
	Backoff []time.Duration
	// AckWait is how long a worker may stay silent before its item goes
	// to another; workers heartbeat at a third of it.
	AckWait time.Duration
	Log     *slog.Logger
}

// Queue is the piece work queue under sub: FERRY_WORK, one item per CAR
// on <prefix>work.piece.<car>, dead letters on FERRY_DLQ.
func Queue(sub jetlog.Subjects) workqueue.Queue {
	if sub.Prefix == "" {
		sub = jetlog.DefaultSubjects
	}
	return workqueue.Queue{
		Name: "piece work", Stream: jetlog.StreamWork, Subject: sub.Work(""), Consumer: jetlog.WorkConsumer,
		DeadStream: jetlog.StreamDLQ, DeadSubject: sub.DeadLetter(""), Attempts: "piece",
	}
}

// Enqueue puts a CAR's work item on the queue. The queue keeps at most one
// item per CAR, so enqueuing a CAR that waits already changes nothing.
func Enqueue(ctx context.Context, js jetstream.JetStream, sub jetlog.Subjects, ev *events.CarReplicated) error {
	data, err := events.Encode(ev)
	if err != nil {
		return err
	}
	return workqueue.Enqueue(ctx, js, Queue(sub), ev.Car, data)
}

// Pool is a running set of workers.
type Pool struct {
	cfg Config
	pub *jetlog.Publisher
	wq  *workqueue.Workers
}

// New returns a pool on js.
func New(js jetstream.JetStream, cfg Config) *Pool {
	if cfg.Subjects.Prefix == "" {
		cfg.Subjects = jetlog.DefaultSubjects
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	p := &Pool{cfg: cfg, pub: jetlog.NewPublisher(js, cfg.Subjects)}
	p.wq = workqueue.New(js, Queue(cfg.Subjects), workqueue.Config{
		Workers: cfg.Workers, MaxDeliver: cfg.MaxDeliver, Backoff: cfg.Backoff, AckWait: cfg.AckWait,
		Reason: reason, Dead: p.dead, Log: cfg.Log,
	}, p.work)
	return p
}

// Run works until ctx ends.
func (p *Pool) Run(ctx context.Context) error { return p.wq.Run(ctx) }

// work handles one item: a piece, or car.invalid when no retry can help,
// or an error to retry.
func (p *Pool) work(ctx context.Context, job workqueue.Job) error {
	var ev events.CarReplicated
	if err := json.Unmarshal(job.Data, &ev); err != nil {
		return workqueue.Drop("unreadable work item", err)
	}
	if ev.Car == "" {
		return workqueue.Drop("unreadable work item", errors.New("no car"))
	}
	log := p.cfg.Log.With("car", ev.Car, "delivery", job.Attempt)
	res, err := carcheck.FetchAndCheck(ctx, ev.URLs, p.cfg.Fetch, carcheck.CheckOptions{
		MaxSize: p.cfg.MaxSize, ExpectSize: ev.Size, ExpectMD5: ev.MD5,
	})
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err == nil:
		out := &events.CarPiece{Car: ev.Car, Piece: res.Commitment.MustV2().String()}
		if err := p.publish(ctx, out); err != nil {
			return err
		}
		log.Info("piece computed", "piece", out.Piece, "size", res.Size)
	case allInvalid(err):
		if err := p.publish(ctx, &events.CarInvalid{Car: ev.Car, Reason: reason(err)}); err != nil {
			return err
		}
		log.Warn("CAR invalid", "reason", err)
	default:
		return err
	}
	return nil
}

// dead rejects a CAR whose item ran out of attempts, with the last reason.
func (p *Pool) dead(ctx context.Context, job workqueue.Job, why string) error {
	var ev events.CarReplicated
	if err := json.Unmarshal(job.Data, &ev); err != nil {
		return err // work read it: not reached
	}
	return p.publish(ctx, &events.CarInvalid{Car: ev.Car, Reason: fmt.Sprintf("gave up after %d attempts: %s", job.Attempt, why)})
}

// publish appends a piece work's outcome to the input log; a failure is
// the queue's RetrySoon, since the work itself is done.
func (p *Pool) publish(ctx context.Context, out events.Event) error {
	if _, err := p.pub.Publish(ctx, out); err != nil {
		return workqueue.RetrySoon(fmt.Errorf("piece outcome not published: %w", err))
	}
	return nil
}

// allInvalid: every source gave bad bytes, so no retry can help.
func allInvalid(err error) bool {
	if fe, ok := errors.AsType[*carcheck.FetchError](err); ok {
		return fe.Invalid()
	}
	return carcheck.IsInvalid(err)
}

// reason is what a car.invalid event and a dead letter say about err:
// what was refused or wrong, never what a source answered beyond that
// (carcheck.FetchError.Reason); the log keeps the whole error.
func reason(err error) string {
	if fe, ok := errors.AsType[*carcheck.FetchError](err); ok {
		return fe.Reason()
	}
	return carcheck.Describe(err)
}
