package spade

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/projections"
)

// Dealer offers READY aggregates to the deal engine and records each
// outcome in the input log, where the fold moves the aggregate on: a
// deal.offered (READY → DEAL_PENDING) or a deal.offer_failed whose reason
// shows on the aggregate. When to offer an aggregate again after a
// missing report or a failed deal is the fold's decision (its deal clock),
// not the dealer's: the dealer offers whatever the fold makes READY.
//
// Goroutines: Run's workers each own one offer at a time; Enqueue and
// EnqueueReady may be called from any goroutine.
type Dealer struct {
	Offerer *Offerer
	// Store is the read models the offers are built from (ReadOffer).
	Store *projections.Store
	// ReportURL is the reportUrl sent with every offer.
	ReportURL string
	// Publish appends an input event.
	Publish func(ctx context.Context, ev events.Event) error
	// Active reports whether this process should offer now (it leads the
	// aggregator); a standby leaves offers to the leader.
	Active func() bool
	// RetryAfter is how long a transient failure waits before the offer is
	// made again; refusals are not retried. Zero means ten minutes.
	RetryAfter time.Duration
	// Workers is how many offers are made at once; zero (or less) means 2.
	Workers int
	Log     *slog.Logger
	// OnOffer, if set, hears the outcome (Outcome) of each offer made,
	// after the Offerer's retries (metrics).
	OnOffer func(outcome string)

	once    sync.Once
	queue   chan uint64
	mu      sync.Mutex
	pending map[uint64]bool
}

func (d *Dealer) init() {
	d.once.Do(func() {
		d.queue = make(chan uint64, 4096)
		d.pending = map[uint64]bool{}
		if d.Log == nil {
			d.Log = slog.New(slog.DiscardHandler)
		}
	})
}

// Enqueue asks for an aggregate to be offered; an aggregate already waiting
// is not queued twice.
func (d *Dealer) Enqueue(id uint64) {
	d.init()
	d.mu.Lock()
	if d.pending[id] {
		d.mu.Unlock()
		return
	}
	d.pending[id] = true
	d.mu.Unlock()
	go func() { d.queue <- id }()
}

// Run offers queued aggregates until ctx ends.
func (d *Dealer) Run(ctx context.Context) error {
	d.init()
	var wg sync.WaitGroup
	for range d.workers() {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case id := <-d.queue:
					d.offer(ctx, id)
				}
			}
		})
	}
	wg.Wait()
	return nil
}

func (d *Dealer) workers() int {
	if d.Workers <= 0 {
		return 2
	}
	return d.Workers
}

// EnqueueReady enqueues every aggregate the read models hold as READY:
// what to offer after a restart or a change of leader, when the offers
// in flight before it were lost.
func (d *Dealer) EnqueueReady() error {
	const page = 1000
	var after uint64
	for {
		list, err := d.Store.Aggregates(aggregator.Ready, after, page)
		if err != nil {
			return err
		}
		for _, a := range list {
			d.Enqueue(a.ID)
			after = a.ID
		}
		if len(list) < page {
			return nil
		}
	}
}

func (d *Dealer) offer(ctx context.Context, id uint64) {
	d.mu.Lock()
	delete(d.pending, id)
	d.mu.Unlock()
	if d.Active != nil && !d.Active() {
		// A standby (or a leader between terms) offers nothing now, but
		// keeps the aggregate: dropping it could leave it READY forever.
		d.retryLater(ctx, id)
		return
	}
	log := d.Log.With("aggregate", id)
	offer, err := ReadOffer(d.Store, id, d.ReportURL)
	if err != nil {
		log.Warn("offer not built", "err", err)
		return
	}
	err = d.Offerer.Offer(ctx, offer)
	if ctx.Err() != nil {
		return
	}
	if d.OnOffer != nil {
		d.OnOffer(Outcome(err))
	}
	var ev events.Event = &events.DealOffered{Aggregate: id, Piece: offer.Piece, Engine: d.Offerer.URL, Offer: offer.Nth}
	if err != nil {
		failed := &events.OfferFailed{Aggregate: id, Reason: err.Error(), Status: engineStatus(err)}
		log.Warn("offer failed", "err", err)
		if !errors.Is(err, ErrRefused) && !errors.Is(err, ErrBadOffer) {
			failed.RetryAt = time.Now().UTC().Add(d.retryWait())
			d.retryLater(ctx, id)
		}
		ev = failed
	} else {
		log.Info("offered", "piece", offer.Piece, "pieces", len(offer.Pieces))
	}
	if err := d.Publish(ctx, ev); err != nil {
		log.Error("offer outcome not recorded; offering again later", "err", err)
		d.retryLater(ctx, id)
	}
}

// engineStatus is the HTTP status of the engine's answer in an offer's
// error, 0 when it did not answer.
func engineStatus(err error) int {
	if re, ok := errors.AsType[*RefusedError](err); ok {
		return re.Status
	}
	if se, ok := errors.AsType[*StatusError](err); ok {
		return se.Status
	}
	return 0
}

func (d *Dealer) retryWait() time.Duration {
	if d.RetryAfter <= 0 {
		return 10 * time.Minute
	}
	return d.RetryAfter
}

func (d *Dealer) retryLater(ctx context.Context, id uint64) {
	time.AfterFunc(d.retryWait(), func() {
		if ctx.Err() == nil {
			d.Enqueue(id)
		}
	})
}
