package workqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/wire"
	"github.com/nats-io/nats.go/jetstream"
)

// Attempt records: a worker may run on any machine, so what it learnt of
// an item that failed is written where any reader finds it, the
// jetlog.BucketAttempts bucket, under Queue.AttemptKey(key). It is written
// at each failure and removed when the item is done, so a reader sees the
// last failure of an item that still waits. Recording is best effort: a
// record that cannot be written costs the reader its diagnosis, never the
// item its work.

// AttemptKey is the key of the attempt record of key in the bucket.
func (q Queue) AttemptKey(key string) string { return q.Attempts + "." + key }

// ErrNoAttempt is returned by LastAttempt for an item with no failed
// attempt on record.
var ErrNoAttempt = errors.New("no failed attempt on record")

// Attempts reads and writes a queue's attempt records.
type Attempts struct {
	kv jetstream.KeyValue
	q  Queue
}

// OpenAttempts opens q's attempt records in the jetlog.BucketAttempts
// bucket, which jetlog.EnsureStreams creates.
func OpenAttempts(ctx context.Context, js jetstream.JetStream, q Queue) (*Attempts, error) {
	kv, err := js.KeyValue(ctx, jetlog.BucketAttempts)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", jetlog.BucketAttempts, err)
	}
	return &Attempts{kv: kv, q: q}, nil
}

// Last returns the last failed attempt of key's item; ErrNoAttempt when
// none is on record.
func (a *Attempts) Last(ctx context.Context, key string) (*wire.WorkAttempt, error) {
	e, err := a.kv.Get(ctx, a.q.AttemptKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, ErrNoAttempt
	}
	if err != nil {
		return nil, err
	}
	var w wire.WorkAttempt
	if err := json.Unmarshal(e.Value(), &w); err != nil {
		return nil, fmt.Errorf("attempt record %s: %w", e.Key(), err)
	}
	return &w, nil
}

func (a *Attempts) put(ctx context.Context, key string, w *wire.WorkAttempt) error {
	data, err := json.Marshal(w)
	if err != nil {
		return err
	}
	_, err = a.kv.Put(ctx, a.q.AttemptKey(key), data)
	return err
}

// forget removes key's record; one that is not there is no error.
func (a *Attempts) forget(ctx context.Context, key string) error {
	err := a.kv.Delete(ctx, a.q.AttemptKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	return err
}

// workerName names this process in attempt records.
func workerName() string {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	return host + ":" + strconv.Itoa(os.Getpid())
}

// recordFailure writes the record of a failed attempt: retried after
// delay, or dead when delay is negative.
func (w *Workers) recordFailure(ctx context.Context, job Job, cause error, delay time.Duration, log *slog.Logger) {
	if w.attempts == nil {
		return
	}
	now := time.Now().UTC()
	rec := &wire.WorkAttempt{Attempt: job.Attempt, MaxAttempts: w.cfg.MaxDeliver, LastError: w.cfg.Reason(cause),
		At: now, Worker: w.worker}
	if delay >= 0 {
		rec.NextRetryAt = now.Add(delay)
	} else {
		rec.Dead = true
	}
	if err := w.attempts.put(ctx, job.Key, rec); err != nil {
		log.Warn(w.q.Name+" attempt not recorded", "err", err)
	}
}

// recordDone removes the record of an item that is done or dropped. Only
// an item delivered before may have one: the first delivery's success,
// the common case, costs no write.
func (w *Workers) recordDone(ctx context.Context, job Job, log *slog.Logger) {
	if w.attempts == nil || job.Attempt <= 1 {
		return
	}
	if err := w.attempts.forget(ctx, job.Key); err != nil {
		log.Warn(w.q.Name+" attempt record not removed", "err", err)
	}
}
