package dashboard

import (
	"cmp"
	"context"
	"net/http"
	"slices"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/projections"
	"github.com/ferry-dev/ferry/wire"
)

// Bounds of the overview's lists.
const (
	recentAggregates = 25
	oldestQueued     = 10
	queuedCountCap   = 100000
	lastRejections   = 10
	fillingShown     = 20 // the pool's and the oldest groups'; a log of thousands of tenants has as many
	aggregatesPage   = 1000
)

// states is the order the overview lists aggregate states in.
var states = []string{aggregator.Ingesting, aggregator.Ready, aggregator.DealPending, aggregator.DealProcessed, aggregator.DealFailed, aggregator.Released}

// overviewPage is what the overview shows.
type overviewPage struct {
	Now      time.Time
	Settings events.Settings
	// Ingesting is the aggregates filling: the shared pool's first, then
	// the groups' by id (the oldest, next to be released), at most
	// fillingShown; More sums the rest.
	Ingesting []*ingesting
	More      moreFilling
	// States counts aggregates by state, in the order of states.
	States []stateCount
	// Aggregates are the newest, newest first.
	Aggregates []wire.AggregateView
	Queued     []wire.CarView
	QueuedN    int
	QueuedCap  int
	Rejections []projections.Rejection
	Queues     []queueState
	QueuesErr  string
	Rate       rateNow
	Pins       []stateCount // nil without a pins read model
	Cars       uint64
	AggSeq     uint64
}

// moreFilling sums the INGESTING aggregates the overview leaves out.
type moreFilling struct {
	N, CARs int
	Payload uint64
}

type stateCount struct {
	State string
	N     int
}

// ingesting is an aggregate filling now.
type ingesting struct {
	wire.AggregateView
	MinPayload, DealSize uint64
	// Age is how long its max-wait clock has run (0: not started).
	Age time.Duration
	// Left is the time to the max-wait close once the minimum payload is
	// in (negative: due at the next tick).
	Left time.Duration
	// GroupMaxWait is the settings' for a group's aggregate (0: never
	// released); GroupLeft the time until a tick releases it into the
	// shared pool if it still holds less than the minimum payload.
	GroupMaxWait    time.Duration
	GroupLeft       time.Duration
	HasMin, Started bool
}

func (d *Dashboard) overview(w http.ResponseWriter, r *http.Request) {
	p, err := d.gather(r.Context(), time.Now())
	if err != nil {
		d.fail(w, err, "")
		return
	}
	d.render(w, http.StatusOK, "overview.html", p)
}

func (d *Dashboard) gather(ctx context.Context, now time.Time) (*overviewPage, error) {
	p := &overviewPage{Now: now, QueuedCap: queuedCountCap, Cars: d.Store.CarCount(), AggSeq: d.Store.AggSeq()}
	if d.Settings != nil {
		p.Settings = d.Settings()
	}
	// The read models hold the settings the log is folded under now: a
	// settings.change since this process started is in them.
	if cfg, err := d.Store.Settings(); err != nil {
		return nil, err
	} else if cfg != nil {
		p.Settings = *cfg
	}
	if err := d.aggregates(p); err != nil {
		return nil, err
	}
	var err error
	if p.Queued, p.QueuedN, err = d.Store.OldestQueued(oldestQueued, queuedCountCap); err != nil {
		return nil, err
	}
	for i := range p.Queued {
		d.addWork(ctx, &p.Queued[i])
	}
	if p.Rejections, err = d.Store.Rejections(lastRejections); err != nil {
		return nil, err
	}
	if d.JS != nil {
		p.Queues, err = queueStates(ctx, d.JS, d.Queues)
		if err != nil {
			p.QueuesErr = err.Error() // the rest of the page is still worth showing
		}
	}
	p.Rate = d.rate.now(now, p.Cars)
	if d.Pins != nil {
		if p.Pins, err = d.pinCounts(); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// aggregates reads every aggregate's view (without pieces), a page at a
// time: counts by state, the newest few and the INGESTING ones.
func (d *Dashboard) aggregates(p *overviewPage) error {
	counts := map[string]int{}
	var newest []wire.AggregateView
	for after := uint64(0); ; {
		list, err := d.Store.Aggregates("", after, aggregatesPage)
		if err != nil {
			return err
		}
		for _, a := range list {
			counts[a.State]++
			if a.State == aggregator.Ingesting {
				p.Ingesting = append(p.Ingesting, d.filling(a, p.Settings, p.Now))
			}
		}
		newest = append(newest, list...)
		if len(newest) > recentAggregates {
			newest = newest[len(newest)-recentAggregates:]
		}
		if len(list) < aggregatesPage {
			break
		}
		after = list[len(list)-1].ID
	}
	slices.SortFunc(newest, func(a, b wire.AggregateView) int { return cmp.Compare(b.ID, a.ID) })
	pooled := func(in *ingesting) int {
		if in.Group == "" {
			return 0
		}
		return 1
	}
	slices.SortFunc(p.Ingesting, func(a, b *ingesting) int {
		return cmp.Or(cmp.Compare(pooled(a), pooled(b)), cmp.Compare(a.ID, b.ID))
	})
	if len(p.Ingesting) > fillingShown {
		for _, in := range p.Ingesting[fillingShown:] {
			p.More.N, p.More.CARs, p.More.Payload = p.More.N+1, p.More.CARs+in.Count, p.More.Payload+in.Payload
		}
		p.Ingesting = p.Ingesting[:fillingShown]
	}
	p.Aggregates = newest
	for _, st := range states {
		p.States = append(p.States, stateCount{st, counts[st]})
	}
	return nil
}

func (d *Dashboard) filling(a wire.AggregateView, s events.Settings, now time.Time) *ingesting {
	in := &ingesting{AggregateView: a, MinPayload: s.MinPayload, DealSize: cmp.Or(s.DealSize, a.DealSize)}
	in.HasMin = a.Payload >= s.MinPayload
	if !a.WaitSince.IsZero() {
		in.Started = true
		in.Age = now.Sub(a.WaitSince)
		in.Left = s.MaxWait - in.Age
		if a.Group != "" && s.GroupMaxWait > 0 {
			in.GroupMaxWait, in.GroupLeft = s.GroupMaxWait, s.GroupMaxWait-in.Age
		}
	}
	return in
}

func (d *Dashboard) pinCounts() ([]stateCount, error) {
	var out []stateCount
	for _, st := range []string{projections.PinQueued, projections.PinPinning, projections.PinPinned, projections.PinFailed} {
		_, n, err := d.Pins.Pins(projections.PinQuery{Statuses: []string{st}})
		if err != nil {
			return nil, err
		}
		out = append(out, stateCount{st, n})
	}
	return out, nil
}
