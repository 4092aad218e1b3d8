package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/ferry-dev/ferry/events"

	"github.com/ferry-dev/ferry/internal/ctxerr"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go/jetstream"
)

// maxTx bounds the batches one write transaction applies: large enough to
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
	// batches it applied (receipts and metrics follow the store this way).
	OnApplied func([]LoggedBatch)

	mu     sync.Mutex
	seq    uint64 // the last aggregate log message applied
	in     uint64 // the input of the last batch applied
	notify chan struct{}
}

// NewProjector returns a projector of the aggregate log into store.
func NewProjector(js jetstream.JetStream, store *Store, log *slog.Logger) *Projector {
	if log == nil {
		log = slog.Default()
	}
	return &Projector{js: js, store: store, log: log, seq: store.AggSeq(), in: store.LastIn(), notify: make(chan struct{})}
}

// Seq is the last aggregate log sequence applied.
func (p *Projector) Seq() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seq
}

// LastIn is the input log sequence of the last batch applied.
func (p *Projector) LastIn() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.in
}

// WaitFor blocks until the projection has applied the aggregate log up to
// seq or ctx ends.
func (p *Projector) WaitFor(ctx context.Context, seq uint64) error {
	return p.wait(ctx, func() bool { return p.seq >= seq })
}

// WaitForInput blocks until the projection has applied the batches of the
// inputs up to in or ctx ends. An input that caused no decision (a tick
// that changed nothing) has no batch: wait for one that did.
func (p *Projector) WaitForInput(ctx context.Context, in uint64) error {
	return p.wait(ctx, func() bool { return p.in >= in })
}

// wait blocks until done, called under p.mu, holds or ctx ends.
func (p *Projector) wait(ctx context.Context, done func() bool) error {
	for {
		p.mu.Lock()
		done, ch := done(), p.notify
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
	if err := p.checkPosition(ctx); err != nil {
		return err
	}
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
	logged := make(chan LoggedBatch, maxBulkTx)
	readErr := make(chan error, 1)
	go func() {
		defer close(logged)
		readErr <- jetlog.Tail(ctx, p.js, jetlog.StreamAgg, p.Seq()+1, follow, func(e jetlog.Entry) error {
			var msg []LoggedBatch
			err := events.EachBatch(e.Data, func(b *events.Batch) error {
				msg = append(msg, LoggedBatch{Seq: e.Seq, Batch: *b, At: e.Time})
				msg[len(msg)-1].Prepare()
				return nil
			})
			if err != nil {
				return fmt.Errorf("aggregate log %d: %w", e.Seq, err)
			}
			msg[len(msg)-1].end = true
			for _, lb := range msg {
				if err := send(ctx, logged, lb); err != nil {
					return err
				}
			}
			return nil
		})
	}()
	limit := maxTx
	if !follow {
		limit = maxBulkTx
	}
	for {
		txn, ok := drain(logged, limit)
		if len(txn) > 0 {
			if err := p.apply(txn); err != nil {
				return err
			}
		}
		if !ok {
			return ctxerr.NilIfDone(ctx, <-readErr)
		}
	}
}

func send(ctx context.Context, ch chan<- LoggedBatch, e LoggedBatch) error {
	select {
	case ch <- e:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// checkPosition makes sure the read models are a prefix of the aggregate
// log as it is now: the message at the stored sequence must still end with
// the batch of the stored last input. A log that lost its tail (an OS
// crash within the fsync interval, a restored backup, a stream created
// with asynchronous persistence) makes the same batches again from the
// input log, but grouped into messages differently, so a position by
// message sequence could skip or repeat batches. Read models that are
// ahead of or apart from the log are emptied and rebuilt from its start.
func (p *Projector) checkPosition(ctx context.Context) error {
	seq, in := p.store.AggSeq(), p.store.LastIn()
	if seq == 0 {
		return nil
	}
	st, err := p.js.Stream(ctx, jetlog.StreamAgg)
	if err != nil {
		return err
	}
	var logIn uint64
	m, err := st.GetMsg(ctx, seq)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
	case err != nil:
		return fmt.Errorf("aggregate log %d: %w", seq, err)
	default:
		_ = events.EachBatch(m.Data, func(b *events.Batch) error {
			logIn = b.In
			return nil
		})
	}
	if logIn == in && in != 0 {
		return nil
	}
	p.log.Warn("read models do not match the aggregate log (it lost its tail and made it again); rebuilding them",
		"aggregateLogSeq", seq, "lastInput", in, "logLastInputThere", logIn)
	if err := p.store.Reset(); err != nil {
		return err
	}
	p.mu.Lock()
	p.seq, p.in = 0, 0
	p.mu.Unlock()
	return nil
}

// drain returns the batches of one write transaction: it blocks for one,
// then takes what else is ready up to limit, and always the rest of the
// last message it took: a transaction applies
// whole messages, so the sequence it stores is never that of a message
// applied in part. ok is false once the channel is closed; a message cut
// short by the close is left out.
func drain(ch <-chan LoggedBatch, limit int) ([]LoggedBatch, bool) {
	e, ok := <-ch
	if !ok {
		return nil, false
	}
	txn := []LoggedBatch{e}
	for {
		whole := txn[len(txn)-1].end
		if whole && len(txn) >= limit {
			return txn, true
		}
		var e LoggedBatch
		var ok bool
		if whole {
			select {
			case e, ok = <-ch:
			default:
				return txn, true
			}
		} else {
			e, ok = <-ch // the rest of the message is on its way
		}
		if !ok {
			for len(txn) > 0 && !txn[len(txn)-1].end {
				txn = txn[:len(txn)-1]
			}
			return txn, false
		}
		txn = append(txn, e)
	}
}

func (p *Projector) apply(txn []LoggedBatch) error {
	if err := p.store.Apply(txn); err != nil {
		p.log.Error("projection stopped", "err", err)
		return err
	}
	p.mu.Lock()
	p.seq = txn[len(txn)-1].Seq
	p.in = txn[len(txn)-1].Batch.In
	close(p.notify)
	p.notify = make(chan struct{})
	p.mu.Unlock()
	if p.OnApplied != nil {
		p.OnApplied(txn)
	}
	return nil
}
