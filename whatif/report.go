package whatif

import (
	"cmp"
	"math"
	"slices"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/piece"
)

// Report is what the policies would have done with the log.
type Report struct {
	// Inputs is how many inputs were read, sequences First through Last.
	Inputs int    `json:"inputs"`
	First  uint64 `json:"first"`
	Last   uint64 `json:"last"`
	// Skipped counts the inputs no policy folded, by type (see the
	// package doc), sorted by type.
	Skipped  []Count   `json:"skipped"`
	Policies []Outcome `json:"policies"`
}

// Count is a number of inputs of one type.
type Count struct {
	Type string `json:"type"`
	N    int    `json:"n"`
}

// Outcome is one policy's result.
type Outcome struct {
	Name     string          `json:"name"`
	Settings events.Settings `json:"settings"`
	// Accepted and Rejected count CARs: accepted ones are queued or in an
	// aggregate; a CAR larger than the policy's deal takes is rejected.
	Accepted int `json:"accepted"`
	Rejected int `json:"rejected"`
	// Deals is the deals that would have been offered: one per aggregate
	// made (each READY at the end, see the package doc).
	Deals int  `json:"deals"`
	Fill  Fill `json:"fill"`
	// ToReady is the CARs' time from acceptance to READY.
	ToReady Wait `json:"toReady"`
	// Waiting is CARs still waiting at the end of the log: Queued for a
	// piece, Ingesting in the open aggregate.
	Waiting Waiting `json:"waiting"`
	Bytes   Bytes   `json:"bytes"`
	// Aggregates is every aggregate made, by id.
	Aggregates []Aggregate `json:"aggregates"`
}

// Aggregate is one aggregate a policy made.
type Aggregate struct {
	ID      uint64  `json:"id"`
	Piece   string  `json:"piece"`
	Count   int     `json:"count"`
	Payload uint64  `json:"payload"`
	Padded  uint64  `json:"padded"`
	Gaps    uint64  `json:"gaps"`
	Fill    float64 `json:"fill"`
	Closed  string  `json:"closed"`
	// Members are its CARs in arrival order, with Options.Members.
	Members []string `json:"members,omitempty"`
}

// Fill is the distribution of the aggregates' fill (payload over deal
// capacity). Histogram[i] counts fills in [i/10, (i+1)/10); a fill of 1
// is in the last.
type Fill struct {
	Min       float64 `json:"min"`
	P50       float64 `json:"p50"`
	P90       float64 `json:"p90"`
	Max       float64 `json:"max"`
	Histogram [10]int `json:"histogram"`
}

// Wait is the distribution of CARs' time to READY, in seconds.
// Histogram[i] counts the waits up to WaitBounds[i] (and over the one
// before); the last counts those over every bound.
type Wait struct {
	CARs      int                      `json:"cars"`
	P50       float64                  `json:"p50"`
	P90       float64                  `json:"p90"`
	P99       float64                  `json:"p99"`
	Max       float64                  `json:"max"`
	Histogram [len(WaitBounds) + 1]int `json:"histogram"`
}

// WaitBounds are the upper bounds of Wait.Histogram's buckets.
var WaitBounds = [...]time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour,
	4 * time.Hour, 12 * time.Hour, 24 * time.Hour, 72 * time.Hour}

// Waiting is the CARs still waiting at the end of the log.
type Waiting struct {
	Queued    int `json:"queued"`
	Ingesting int `json:"ingesting"`
}

// Bytes are the totals of the aggregates made: their CAR bytes, padded
// piece bytes and layout gaps, the deals' size, and the waste (padded
// minus payload plus gaps).
type Bytes struct {
	Payload uint64 `json:"payload"`
	Padded  uint64 `json:"padded"`
	Gaps    uint64 `json:"gaps"`
	Deals   uint64 `json:"deals"`
	Waste   uint64 `json:"waste"`
}

// Report returns the result of the inputs folded so far.
func (f *Folder) Report() *Report {
	rep := &Report{Inputs: f.inputs, First: f.first, Last: f.last, Skipped: []Count{}}
	for typ, n := range f.skipped {
		rep.Skipped = append(rep.Skipped, Count{typ, n})
	}
	slices.SortFunc(rep.Skipped, func(a, b Count) int { return cmp.Compare(a.Type, b.Type) })
	for _, r := range f.runs {
		rep.Policies = append(rep.Policies, r.outcome())
	}
	return rep
}

func (r *run) outcome() Outcome {
	o := Outcome{Name: r.policy.Name, Settings: r.policy.Fold, Accepted: r.accepted, Rejected: r.rejected,
		Deals: len(r.aggs), Aggregates: slices.Clone(r.aggs),
		Waiting: Waiting{Queued: len(r.queued), Ingesting: len(r.open.since)}}
	if o.Aggregates == nil {
		o.Aggregates = []Aggregate{}
	}
	slices.SortFunc(o.Aggregates, func(a, b Aggregate) int { return cmp.Compare(a.ID, b.ID) })
	fills := make([]float64, len(r.aggs))
	for i, a := range r.aggs {
		fills[i] = a.Fill
		o.Bytes.Payload += a.Payload
		o.Bytes.Padded += a.Padded
		o.Bytes.Gaps += a.Gaps
		o.Bytes.Deals += r.policy.Fold.DealSize
		o.Fill.Histogram[min(int(a.Fill*10), 9)]++
	}
	o.Bytes.Waste = o.Bytes.Padded - o.Bytes.Payload + o.Bytes.Gaps
	slices.Sort(fills)
	if len(fills) > 0 {
		o.Fill.Min, o.Fill.Max = fills[0], fills[len(fills)-1]
		o.Fill.P50, o.Fill.P90 = quantile(fills, 0.5), quantile(fills, 0.9)
	}
	waits := slices.Clone(r.waits)
	slices.Sort(waits)
	o.ToReady.CARs = len(waits)
	for _, w := range waits {
		i, _ := slices.BinarySearch(WaitBounds[:], w)
		o.ToReady.Histogram[i]++
	}
	if len(waits) > 0 {
		sec := func(d time.Duration) float64 { return d.Seconds() }
		o.ToReady.P50, o.ToReady.P90 = sec(quantile(waits, 0.5)), sec(quantile(waits, 0.9))
		o.ToReady.P99, o.ToReady.Max = sec(quantile(waits, 0.99)), sec(waits[len(waits)-1])
	}
	return o
}

// quantile is the nearest-rank q-quantile of sorted, which is not empty:
// a value that occurs, so the report never invents one.
func quantile[T any](sorted []T, q float64) T {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(i, 0)]
}

// capacity is the CAR bytes a deal of dealSize holds when full.
func capacity(dealSize uint64) uint64 { return piece.Unpadded(dealSize) }
