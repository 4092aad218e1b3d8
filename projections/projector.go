package projections

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/nats-io/nats.go/jetstream"
)

// maxTx bounds the entries one write transaction applies: large enough to
// amortise bbolt's commit, small enough to keep readers current.
const maxTx = 1024

// maxBulkTx bounds a rebuild's transactions, which no reader waits for.
const maxBulkTx = 8192

// Projector follows the aggregate log into a Store.
//
// Goroutines: Run's reader goroutine tails the log into a channel; Run
// itself owns every write to the store.
type Projector struct {
	js    jetstream.JetStream
	store *Store
	log   *slog.Logger
	// OnApplied, if set, is called after each transaction with the
	// entries it applied (receipts and metrics follow the store this way).
	OnApplied func([]Entry)

	mu     sync.Mutex
	seq    uint64
	notify chan struct{}
}

// NewProjector returns a projector of the aggregate log into store.
func NewProjector(js jetstream.JetStream, store *Store, log *slog.Logger) *Projector {
	if log == nil {
		log = slog.Default()
	}
	return &Projector{js: js, store: store, log: log, seq: store.AggSeq(), notify: make(chan struct{})}
}

// Seq is the last aggregate log sequence applied.
func (p *Projector) Seq() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seq
}

// WaitFor blocks until the projection has applied seq or ctx ends.
func (p *Projector) WaitFor(ctx context.Context, seq uint64) error {
	for {
		p.mu.Lock()
		done, ch := p.seq >= seq, p.notify
		p.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// Run applies the aggregate log from the stored sequence on, following it
// until ctx ends. With follow false it returns once it has caught up with
// the log as it was when Run started (ferry replay).
//
// A rebuild (follow false) commits without fsync and syncs once at the end:
// if it dies, the file is rebuilt again.
func (p *Projector) Run(ctx context.Context, follow bool) (err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if !follow {
		if err := p.store.Bulk(true); err != nil {
			return err
		}
		defer func() {
			if serr := p.store.Bulk(false); err == nil {
				err = serr
			}
		}()
	}
	entries := make(chan Entry, maxBulkTx)
	readErr := make(chan error, 1)
	go func() {
		defer close(entries)
		readErr <- events.Tail(ctx, p.js, events.StreamAgg, p.Seq()+1, follow, func(e events.Entry) error {
			var b aggregator.Batch
			if err := aggregator.DecodeBatch(e.Data, &b); err != nil {
				return fmt.Errorf("aggregate log %d: %w", e.Seq, err)
			}
			entry := Entry{Seq: e.Seq, Batch: b}
			entry.Prepare()
			select {
			case entries <- entry:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	limit := maxTx
	if !follow {
		limit = maxBulkTx
	}
	for {
		batch, ok := drain(entries, limit)
		if len(batch) > 0 {
			if err := p.apply(batch); err != nil {
				return err
			}
		}
		if !ok {
			err := <-readErr
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// drain blocks for one entry, then takes what else is ready up to limit.
// ok is false once the channel is closed.
func drain(ch <-chan Entry, limit int) ([]Entry, bool) {
	e, ok := <-ch
	if !ok {
		return nil, false
	}
	batch := []Entry{e}
	for len(batch) < limit {
		select {
		case e, ok := <-ch:
			if !ok {
				return batch, false
			}
			batch = append(batch, e)
		default:
			return batch, true
		}
	}
	return batch, true
}

func (p *Projector) apply(batch []Entry) error {
	if err := p.store.Apply(batch); err != nil {
		p.log.Error("projection stopped", "err", err)
		return err
	}
	p.mu.Lock()
	p.seq = batch[len(batch)-1].Seq
	close(p.notify)
	p.notify = make(chan struct{})
	p.mu.Unlock()
	if p.OnApplied != nil {
		p.OnApplied(batch)
	}
	return nil
}
