package workqueue

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go/jetstream"
)

// DeadLetter is an item that ran out of attempts.
type DeadLetter struct {
	// Seq is the letter's sequence in the dead-letter stream.
	Seq  uint64
	Key  string
	Data []byte
	// Reason, Deliveries and FailedAt are the letter's headers: what the
	// last attempt said, how many there were, when it gave up (RFC 3339).
	Reason     string
	Deliveries string
	FailedAt   string
}

// DeadLetters lists q's dead letters in the order they died, of one key
// when key is set.
func DeadLetters(ctx context.Context, js jetstream.JetStream, q Queue, key string) ([]DeadLetter, error) {
	subject := q.DeadSubject + ">"
	if key != "" {
		subject = q.DeadLetter(key)
	}
	var out []DeadLetter
	err := jetlog.TailSubject(ctx, js, q.DeadStream, subject, 1, false, func(e jetlog.Entry) error {
		h := e.Msg.Headers()
		out = append(out, DeadLetter{
			Seq: e.Seq, Key: strings.TrimPrefix(e.Msg.Subject(), q.DeadSubject), Data: e.Data,
			Reason: h.Get(HeaderReason), Deliveries: h.Get(HeaderDeliveries), FailedAt: h.Get(HeaderFailedAt),
		})
		return nil
	})
	return out, err
}

// Replay hands each letter to resubmit, which puts its work back where it
// starts (for many queues: Enqueue of the letter's key and data), then
// deletes the letter and its key's attempt record. A letter whose
// resubmit fails stays, and Replay stops there.
func Replay(ctx context.Context, js jetstream.JetStream, q Queue, letters []DeadLetter, resubmit func(context.Context, DeadLetter) error) error {
	st, err := js.Stream(ctx, q.DeadStream)
	if err != nil {
		return err
	}
	var attempts *Attempts
	if q.Attempts != "" {
		// A NATS server set up before the bucket existed has no records.
		if attempts, err = OpenAttempts(ctx, js, q); errors.Is(err, jetstream.ErrBucketNotFound) {
			attempts = nil
		} else if err != nil {
			return err
		}
	}
	for _, l := range letters {
		if err := resubmit(ctx, l); err != nil {
			return fmt.Errorf("replay %s: %w", l.Key, err)
		}
		if err := st.DeleteMsg(ctx, l.Seq); err != nil {
			return fmt.Errorf("delete dead letter %d: %w", l.Seq, err)
		}
		if attempts != nil {
			// The dead record would show on the item replayed.
			if err := attempts.forget(ctx, l.Key); err != nil {
				return fmt.Errorf("attempt record of %s: %w", l.Key, err)
			}
		}
	}
	return nil
}

// Purge deletes the letters without resubmitting their work.
func Purge(ctx context.Context, js jetstream.JetStream, q Queue, letters []DeadLetter) error {
	return Replay(ctx, js, q, letters, func(context.Context, DeadLetter) error { return nil })
}
