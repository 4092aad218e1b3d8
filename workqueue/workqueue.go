// Package workqueue runs work queues on JetStream: items that wait for
// work, one per key, taken by any number of workers on any number of
// machines, retried with backoff, and kept as dead letters when they run
// out of attempts. It knows nothing of what the work is: a Queue names
// the streams and subjects, a Handler does one item's work.
//
// # Rules
//
//   - A key has at most one item waiting: the work stream keeps one
//     message per subject and refuses new ones (work-queue retention,
//     MaxMsgsPerSubject 1, DiscardNew per subject), so Enqueue of a key
//     that waits already changes nothing.
//   - An item is worked on by one worker at a time: a worker pulls an item
//     only when it is free (a prefetched item would wait unheartbeaten and
//     go to a second worker) and keeps its claim alive with InProgress at
//     a third of the ack wait while the handler runs. A worker that dies
//     or goes silent loses the item to another after the ack wait.
//   - Attempts are counted by JetStream's deliveries. A handler's error
//     retries the item after Backoff[attempt-1] (the last repeats); on
//     attempt MaxDeliver the item is stored on the dead-letter stream
//     (headers Ferry-Reason, Ferry-Deliveries, Ferry-Failed-At), then
//     Config.Dead runs, then the item is acknowledged.
//   - An item is acknowledged only after its handler (or Dead) returned
//     nil, so whatever the handler publishes before returning is never
//     lost by a crash: the work is repeated instead. Handlers must
//     therefore be safe to run twice for one item.
//   - A worker stopped mid-item (its context ends) neither acknowledges
//     nor retries it: the item goes to another worker after the ack wait.
//   - Each failed attempt is recorded (attempt, reason, next retry, dead,
//     worker) in the jetlog.BucketAttempts bucket under the item's key,
//     and the record is removed when the item is done, dropped or
//     replayed: any process can say why an item waits (Attempts.Last).
//   - Dead letters are listed by DeadLetters and leave the stream only
//     through Replay (after the caller resubmitted them) or Purge.
package workqueue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Queue names one work queue's streams, subjects and consumer.
type Queue struct {
	// Name says what the work is in logs and the consumer's description
	// ("piece work").
	Name string
	// Stream holds the waiting items. It must have work-queue retention
	// and keep at most one message per subject, discarding new ones.
	Stream string
	// Subject is the prefix of item subjects: the item of key k is on
	// Subject+k, and the workers' consumer filters Subject+">".
	Subject string
	// Consumer is the durable consumer every worker of the queue shares.
	Consumer string
	// DeadStream keeps the items that ran out of attempts, on
	// DeadSubject+key.
	DeadStream  string
	DeadSubject string
	// Attempts names the queue in the keys of its attempt records
	// ("piece"); empty keeps none.
	Attempts string
}

// Item is the subject of the item of key.
func (q Queue) Item(key string) string { return q.Subject + key }

// DeadLetter is the subject of the dead letter of key.
func (q Queue) DeadLetter(key string) string { return q.DeadSubject + key }

// Enqueue puts an item with body data for key on the queue. A key keeps at
// most one waiting item, so enqueuing a key that waits already changes
// nothing and returns nil.
func Enqueue(ctx context.Context, js jetstream.JetStream, q Queue, key string, data []byte) error {
	_, err := js.Publish(ctx, q.Item(key), data)
	if err != nil && isPerSubjectFull(err) {
		return nil
	}
	return err
}

// isPerSubjectFull is the stream refusing a second item for a key. The
// server reports it as a store failure (10077) with this description.
func isPerSubjectFull(err error) bool {
	return err != nil && strings.Contains(err.Error(), "maximum messages per subject exceeded")
}

// Job is one delivery of an item to a handler.
type Job struct {
	// Key is the item's key: its subject after Queue.Subject.
	Key  string
	Data []byte
	// Attempt counts the deliveries of the item, this one included.
	Attempt int
	// Seq is the item's sequence in the work stream.
	Seq uint64
}

// Handler does one item's work. It returns nil when the item is done (it
// is then acknowledged) and an error when it should be tried again;
// RetrySoon, RetryAfter and Drop say otherwise. A handler is called on many
// goroutines at once.
type Handler func(ctx context.Context, job Job) error

// Config of a set of workers.
type Config struct {
	// Workers is the number of items worked on at once (default 1).
	Workers int
	// MaxDeliver is how often an item is tried before it is dead
	// (default 5).
	MaxDeliver int
	// Backoff is the wait before each retry, by attempt; the last repeats
	// (default 5 s, 30 s, 2 min, 10 min).
	Backoff []time.Duration
	// AckWait is how long a worker may stay silent before its item goes
	// to another (default 30 s); workers heartbeat at a third of it.
	AckWait time.Duration
	// Reason is what a dead letter says about the last error (default
	// err.Error()): a reason may be shown to whoever sent the item, the
	// log keeps the whole error.
	Reason func(error) string
	// Dead runs after an item's dead letter is stored, with the reason
	// the letter records, before the item is acknowledged; an error
	// retries the item after Backoff[0]. Nil: nothing runs.
	Dead func(ctx context.Context, job Job, reason string) error
	Log  *slog.Logger
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
	if c.Reason == nil {
		c.Reason = func(err error) string { return err.Error() }
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// retryError is RetrySoon's error.
type retryError struct{ err error }

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }

// RetrySoon is a handler's error that tries the item again after
// Backoff[0], whatever its attempt, and does not dead-letter it on this
// attempt: for a failure after the work was done (its outcome could not
// be published), which says nothing about the item.
func RetrySoon(err error) error { return &retryError{err: err} }

// waitError is RetryAfter's error.
type waitError struct {
	after time.Duration
	err   error
}

func (e *waitError) Error() string { return e.err.Error() }
func (e *waitError) Unwrap() error { return e.err }

// RetryAfter is a handler's error that tries the item again after d and
// does not dead-letter it on this attempt: for work that waits for
// something outside (content not published yet) under a deadline of the
// handler's own, which ends it when that passes.
func RetryAfter(d time.Duration, err error) error { return &waitError{after: d, err: err} }

// dropError is Drop's error.
type dropError struct {
	reason string
	err    error
}

func (e *dropError) Error() string { return fmt.Sprintf("%s: %v", e.reason, e.err) }
func (e *dropError) Unwrap() error { return e.err }

// Drop is a handler's error that removes the item for good, without a
// dead letter, because of err: for an item no attempt can read. The
// reason is given to JetStream with the termination.
func Drop(reason string, err error) error { return &dropError{reason: reason, err: err} }

// Workers is a running set of workers on one queue.
type Workers struct {
	js  jetstream.JetStream
	q   Queue
	cfg Config
	fn  Handler
	// attempts records failed attempts (nil: not recorded); worker names
	// this process in them.
	attempts *Attempts
	worker   string
}

// New returns workers on q that do each item with fn.
func New(js jetstream.JetStream, q Queue, cfg Config, fn Handler) *Workers {
	cfg.defaults()
	return &Workers{js: js, q: q, cfg: cfg, fn: fn}
}

// EnsureConsumer creates or updates the durable consumer the queue's
// workers share. Deliveries are not bounded by the server: the workers
// count them and dead-letter the item themselves.
func (w *Workers) EnsureConsumer(ctx context.Context) (jetstream.Consumer, error) {
	c, err := w.js.CreateOrUpdateConsumer(ctx, w.q.Stream, jetstream.ConsumerConfig{
		Durable: w.q.Consumer, FilterSubject: w.q.Subject + ">", AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: w.cfg.AckWait, MaxDeliver: -1, MaxAckPending: 1000,
		Description: "ferry " + w.q.Name + " workers",
	})
	if err != nil {
		return nil, fmt.Errorf("%s consumer: %w", w.q.Name, err)
	}
	return c, nil
}

// Run works until ctx ends.
func (w *Workers) Run(ctx context.Context) error {
	cons, err := w.EnsureConsumer(ctx)
	if err != nil {
		return err
	}
	if w.q.Attempts != "" {
		w.worker = workerName()
		if w.attempts, err = OpenAttempts(ctx, w.js, w.q); err != nil {
			w.cfg.Log.Warn(w.q.Name+": failed attempts will not be recorded", "err", err)
		}
	}
	var wg sync.WaitGroup
	for range w.cfg.Workers {
		wg.Go(func() { w.loop(ctx, cons) })
	}
	wg.Wait()
	return nil
}

func (w *Workers) loop(ctx context.Context, cons jetstream.Consumer) {
	for ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		batch, err := cons.Fetch(1, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			if ctx.Err() == nil {
				w.cfg.Log.Warn(w.q.Name+" fetch failed", "err", err)
				sleep(ctx, time.Second)
			}
			continue
		}
		for msg := range batch.Messages() {
			w.work(ctx, msg)
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

// work handles one delivery.
func (w *Workers) work(ctx context.Context, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		_ = msg.Term()
		return
	}
	job := Job{Key: strings.TrimPrefix(msg.Subject(), w.q.Subject), Data: msg.Data(),
		Attempt: int(meta.NumDelivered), Seq: meta.Sequence.Stream}
	log := w.cfg.Log.With("key", job.Key, "delivery", job.Attempt)
	err = w.run(ctx, msg, job)
	if ctx.Err() != nil {
		return // stopping: the item goes to another worker
	}
	var retry *retryError
	var wait *waitError
	var drop *dropError
	switch {
	case err == nil:
		w.recordDone(ctx, job, log)
		if err := msg.DoubleAck(ctx); err != nil {
			log.Warn(w.q.Name+" ack failed", "err", err)
		}
	case errors.As(err, &drop):
		log.Error(w.q.Name+" item dropped", "seq", job.Seq, "reason", drop.reason, "err", drop.err)
		w.recordDone(ctx, job, log)
		_ = msg.TermWithReason(drop.reason)
	case errors.As(err, &retry):
		log.Error(w.q.Name+" not finished; item will be redelivered", "err", err)
		w.retry(ctx, msg, job, err, w.cfg.Backoff[0], log)
	case errors.As(err, &wait):
		log.Info(w.q.Name+" waits; will retry", "err", err, "in", wait.after)
		w.retry(ctx, msg, job, err, wait.after, log)
	case job.Attempt >= w.cfg.MaxDeliver:
		w.dead(ctx, msg, job, err, log)
	default:
		delay := w.cfg.Backoff[min(job.Attempt-1, len(w.cfg.Backoff)-1)]
		log.Warn(w.q.Name+" failed; will retry", "err", err, "in", delay)
		w.retry(ctx, msg, job, err, delay, log)
	}
}

// retry records a failed attempt and hands the item back to be delivered
// again after delay.
func (w *Workers) retry(ctx context.Context, msg jetstream.Msg, job Job, cause error, delay time.Duration, log *slog.Logger) {
	w.recordFailure(ctx, job, cause, delay, log)
	_ = msg.NakWithDelay(delay)
}

// run calls the handler, heartbeating while it runs.
func (w *Workers) run(ctx context.Context, msg jetstream.Msg, job Job) error {
	hctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		t := time.NewTicker(w.cfg.AckWait / 3)
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
	return w.fn(ctx, job)
}

// dead stores the item on the dead-letter stream, runs Config.Dead and
// acknowledges the item.
func (w *Workers) dead(ctx context.Context, msg jetstream.Msg, job Job, cause error, log *slog.Logger) {
	reason := w.cfg.Reason(cause)
	dl := nats.NewMsg(w.q.DeadLetter(job.Key))
	dl.Data = job.Data
	dl.Header.Set(HeaderReason, reason)
	dl.Header.Set(HeaderDeliveries, strconv.Itoa(job.Attempt))
	dl.Header.Set(HeaderFailedAt, time.Now().UTC().Format(time.RFC3339))
	if _, err := w.js.PublishMsg(ctx, dl); err != nil {
		log.Error("dead letter not stored; item will be redelivered", "err", err)
		w.retry(ctx, msg, job, cause, w.cfg.Backoff[0], log)
		return
	}
	w.recordFailure(ctx, job, cause, -1, log)
	if w.cfg.Dead != nil {
		if err := w.cfg.Dead(ctx, job, reason); err != nil {
			log.Error(w.q.Name+" dead, not finished; item will be redelivered", "err", err)
			_ = msg.NakWithDelay(w.cfg.Backoff[0])
			return
		}
	}
	if err := msg.DoubleAck(ctx); err != nil {
		log.Warn(w.q.Name+" ack failed", "err", err)
	}
	log.Error(w.q.Name+" dead", "reason", reason, "err", cause)
}

// Headers of dead letters.
const (
	HeaderReason     = "Ferry-Reason"
	HeaderDeliveries = "Ferry-Deliveries"
	HeaderFailedAt   = "Ferry-Failed-At"
)
