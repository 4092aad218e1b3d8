package aggregator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrLeaseLost is returned when the leadership lease is known to be
// gone: a renewal found the key removed (expired) or written by another
// holder.
var ErrLeaseLost = errors.New("aggregator leadership lease lost")

const leaseKey = "aggregator"

// The lease's timing, all from the bucket's TTL (jetlog.LeaseTTL, T).
// The server removes the key once its last write is T old, checked by a
// timer set to that moment (nats-server's filestore expireMsgs), so a
// standby that polls finds it gone within pollEvery of the expiry.
const (
	// renewEvery is how often the holder renews, and how long one
	// renewal waits for its answer: four tries fit in T.
	renewEvery = jetlog.LeaseTTL / 4
	// fenceAfter is how long after sending the last renewal the server
	// stored the holder goes on appending. The key lives at least T
	// after that send, as the server's clock counts, and no standby can
	// create it before; the margin T - fenceAfter covers the two clocks'
	// rate difference and the time from the fence check to the append
	// leaving the process (see docs/architecture.md, One writer).
	fenceAfter = jetlog.LeaseTTL - jetlog.LeaseTTL/4
	// pollEvery is how often a standby tries to create the key.
	pollEvery = jetlog.LeaseTTL / 16
)

// lease is the aggregator's leadership: a key in a KV bucket whose TTL
// removes it when its holder stops renewing. It keeps a second aggregator
// idle, and its holder fences itself (fence) before the key can expire;
// the expected-last-sequence append is what keeps two writers from
// corrupting the log if two ever lead at once.
//
// Every write of the key is revision-checked, so a renewal that succeeds
// proves that nobody created the key since this holder's previous write:
// the holder led throughout, however late the renewal came.
type lease struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	holder string

	mu  sync.Mutex
	rev uint64
	// sent is when the write that stored rev was sent: the key lives at
	// least jetlog.LeaseTTL after it.
	sent time.Time
	// renewed is closed, and replaced, when a renewal is stored.
	renewed chan struct{}
}

func openLease(ctx context.Context, js jetstream.JetStream, holder string) (*lease, error) {
	kv, err := js.KeyValue(ctx, jetlog.BucketLeader)
	if err != nil {
		return nil, fmt.Errorf("lease bucket: %w", err)
	}
	return &lease{js: js, kv: kv, holder: holder, renewed: make(chan struct{})}, nil
}

// acquire waits until this holder owns the lease. onWait is called once
// with the current holder when it has to wait. A create the stream does
// not answer (no leader for the moment) is tried again.
func (l *lease) acquire(ctx context.Context, onWait func(holder string)) error {
	told := false
	for {
		sent := time.Now()
		tctx, cancel := context.WithTimeout(ctx, renewEvery)
		rev, err := l.kv.Create(tctx, leaseKey, []byte(l.holder))
		cancel()
		switch {
		case err == nil:
			l.stored(rev, sent)
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, jetstream.ErrKeyExists):
			if !told {
				holder := "unknown"
				if e, err := l.kv.Get(ctx, leaseKey); err == nil {
					holder = string(e.Value())
				}
				onWait(holder)
				told = true
			}
		case !jetlog.Unanswered(err):
			return fmt.Errorf("lease: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollEvery):
		}
	}
}

// stored records that the write sent at sent stored revision rev.
func (l *lease) stored(rev uint64, sent time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rev, l.sent = rev, sent
	close(l.renewed)
	l.renewed = make(chan struct{})
}

// fence returns once this holder may append: less than fenceAfter has
// passed since it sent the last renewal the server stored. Past that it
// waits for a renewal to be stored, or for ctx to end (keep cancels it
// when the lease is lost).
func (l *lease) fence(ctx context.Context) error {
	for {
		l.mu.Lock()
		left, renewed := fenceAfter-time.Since(l.sent), l.renewed
		l.mu.Unlock()
		if left > 0 {
			return nil
		}
		select {
		case <-renewed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// keep renews the lease until ctx ends; it returns ErrLeaseLost once a
// renewal finds the key removed or another holder's. A renewal that is
// not answered is sent again with the same revision: the key is still
// this holder's until the server says otherwise, and fence stops the
// appends meanwhile.
func (l *lease) keep(ctx context.Context) error {
	t := time.NewTicker(renewEvery)
	defer t.Stop()
	var (
		first   time.Time // the first renewal sent since the last stored
		adopted bool      // rev was read, not written: the next renewal checks it
	)
	for {
		if !adopted {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
		sent := time.Now()
		if first.IsZero() {
			first = sent
		}
		l.mu.Lock()
		rev := l.rev
		l.mu.Unlock()
		tctx, cancel := context.WithTimeout(ctx, renewEvery)
		next, err := l.kv.Update(tctx, leaseKey, []byte(l.holder), rev)
		cancel()
		switch {
		case err == nil:
			l.stored(next, sent)
			first, adopted = time.Time{}, false
		case ctx.Err() != nil:
			return nil
		case inProcess(err):
			// An earlier renewal is still being stored: the next one
			// knows its outcome.
		case !adopted && (errors.Is(err, jetstream.ErrKeyExists) || jetlog.IsConflict(err)):
			// An earlier renewal whose answer was lost may have been
			// stored: then the key's last write is this holder's. The
			// revision read is tried at once by a renewal, which alone
			// proves it (a get may be answered by a replica behind).
			if next, ok := l.ours(ctx); ok {
				l.mu.Lock()
				l.rev = next
				l.mu.Unlock()
				adopted = true
				continue
			}
			return fmt.Errorf("%w: %v", ErrLeaseLost, err)
		case jetlog.Unanswered(err):
		default:
			return fmt.Errorf("%w: %v", ErrLeaseLost, err)
		}
		adopted = false
	}
}

// inProcess reports whether err is a replicated stream's refusal of a
// write whose subject has an earlier write still being stored: JetStream
// answers it "wrong last sequence" under a code of its own (10164), which
// says nothing about the revision the write expected.
func inProcess(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

// ours returns the key's revision if its last write is this holder's
// (holder names are unique to a process's start), as the bucket's leader
// holds it: a replica behind would show an older write of this holder's.
// A deletion is a write without the holder's name.
func (l *lease) ours(ctx context.Context) (uint64, bool) {
	gctx, cancel := context.WithTimeout(ctx, renewEvery)
	defer cancel()
	rev, value, err := jetlog.LastMsg(gctx, l.js, "KV_"+jetlog.BucketLeader, "$KV."+jetlog.BucketLeader+"."+leaseKey)
	if err != nil || rev == 0 || string(value) != l.holder {
		return 0, false
	}
	return rev, true
}

// release gives the lease up so a standby need not wait for the TTL.
func (l *lease) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	l.mu.Lock()
	rev := l.rev
	l.mu.Unlock()
	_ = l.kv.Delete(ctx, leaseKey, jetstream.LastRevision(rev))
}
