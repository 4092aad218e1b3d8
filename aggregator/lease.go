package aggregator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrLeaseLost is returned when the leadership lease could not be renewed.
var ErrLeaseLost = errors.New("aggregator leadership lease lost")

const leaseKey = "aggregator"

// lease is the aggregator's leadership: a key in a KV bucket whose TTL
// removes it when its holder stops renewing. It keeps a second aggregator
// idle; the expected-last-sequence append is what keeps it from corrupting
// the log if two ever lead at once.
type lease struct {
	kv     jetstream.KeyValue
	holder string
	rev    uint64
}

func openLease(ctx context.Context, js jetstream.JetStream, holder string) (*lease, error) {
	kv, err := js.KeyValue(ctx, jetlog.BucketLeader)
	if err != nil {
		return nil, fmt.Errorf("lease bucket: %w", err)
	}
	return &lease{kv: kv, holder: holder}, nil
}

// acquire waits until this holder owns the lease. onWait is called once
// with the current holder when it has to wait.
func (l *lease) acquire(ctx context.Context, onWait func(holder string)) error {
	told := false
	for {
		rev, err := l.kv.Create(ctx, leaseKey, []byte(l.holder))
		if err == nil {
			l.rev = rev
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("lease: %w", err)
		}
		if !told {
			holder := "unknown"
			if e, err := l.kv.Get(ctx, leaseKey); err == nil {
				holder = string(e.Value())
			}
			onWait(holder)
			told = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(jetlog.LeaseTTL / 4):
		}
	}
}

// keep renews the lease until ctx ends; it returns ErrLeaseLost when a
// renewal fails, which means another holder may lead.
func (l *lease) keep(ctx context.Context) error {
	t := time.NewTicker(jetlog.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			rev, err := l.kv.Update(ctx, leaseKey, []byte(l.holder), l.rev)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("%w: %v", ErrLeaseLost, err)
			}
			l.rev = rev
		}
	}
}

// release gives the lease up so a standby need not wait for the TTL.
func (l *lease) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = l.kv.Delete(ctx, leaseKey, jetstream.LastRevision(l.rev))
}
