package dashboard

import (
	"context"
	"sync"
	"time"
)

// rate keeps samples of the CAR count, a minute's worth, for the ingest
// rate; samples live in memory only.
type rate struct {
	mu      sync.Mutex
	samples []sample
}

type sample struct {
	at   time.Time
	cars uint64
}

// rateWindow is the span the rate is measured over; sampleEvery the
// sampling period.
const (
	rateWindow  = time.Minute
	sampleEvery = 5 * time.Second
)

// rateNow is the ingest rate: new CAR records per minute over Span.
type rateNow struct {
	PerMinute float64
	Span      time.Duration
}

// add keeps a sample and drops those older than the window, keeping one
// at or beyond it as the rate's base.
func (r *rate) add(at time.Time, cars uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples = append(r.samples, sample{at, cars})
	for len(r.samples) > 2 && at.Sub(r.samples[1].at) >= rateWindow {
		r.samples = r.samples[1:]
	}
}

// now adds a sample and gives the rate since the oldest kept.
func (r *rate) now(at time.Time, cars uint64) rateNow {
	r.add(at, cars)
	r.mu.Lock()
	defer r.mu.Unlock()
	first, last := r.samples[0], r.samples[len(r.samples)-1]
	span := last.at.Sub(first.at)
	if span < sampleEvery || last.cars < first.cars { // too short to say
		return rateNow{}
	}
	return rateNow{PerMinute: float64(last.cars-first.cars) / span.Minutes(), Span: span}
}

// Sample samples the CAR count every few seconds until ctx ends, so the
// rate covers the last minute whether or not anyone looks.
func (d *Dashboard) Sample(ctx context.Context) error {
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		d.rate.add(time.Now(), d.Store.CarCount())
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
