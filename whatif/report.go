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
	Name string `json:"name"`
	// Settings are the policy's: for the recorded policy the log's first,
	// which Changes follow.
	Settings events.Settings `json:"settings"`
	// Changes are the settings the recorded policy folded from an input
	// on (the log's settings.change inputs, as ferry decided them).
	Changes []Change `json:"changes,omitempty"`
	// Skipped counts the inputs this policy alone did not fold: an
	// alternative policy holds its settings fixed, so it skips the log's
	// settings.change inputs (see Policy.HoldSettings).
	Skipped []Count `json:"skipped,omitempty"`
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
	// piece, Ingesting in an open aggregate (the pool's or a group's).
	Waiting Waiting `json:"waiting"`
	Bytes   Bytes   `json:"bytes"`
	// Aggregates is every aggregate made, by id.
	Aggregates []Aggregate `json:"aggregates"`
	// Released is every group aggregate released into the shared pool
	// (RELEASED, not a deal), by id.
	Released []Release `json:"released,omitempty"`
	// GroupCounts and Groups are there when the policy grouped CARs
	// (events.Settings.GroupBy), for some of the log at least.
	GroupCounts *GroupCounts `json:"groupCounts,omitempty"`
	// Groups is every group, by name: the shared pool (CARs with no value
	// at GroupBy, "") first.
	Groups []Group `json:"groups,omitempty"`
}

// Change is a log.settings the recorded policy decided at input In.
type Change struct {
	In       uint64          `json:"in"`
	Settings events.Settings `json:"settings"`
}

// Release is a group's INGESTING aggregate released into the shared pool
// (events.DecAggReleased): Count CARs, Why "group-max-wait" or "settings".
type Release struct {
	ID    uint64 `json:"id"`
	Group string `json:"group"`
	Count int    `json:"count"`
	Why   string `json:"why"`
}

// GroupCounts summarise the groups (the shared pool not counted): how
// many there were, how many filled at least one aggregate on their own,
// and how many released CARs into the pool.
type GroupCounts struct {
	Groups      int `json:"groups"`
	FilledAlone int `json:"filledAlone"`
	Released    int `json:"released"`
}

// Group is what a grouped policy did with one group's CARs. A CAR's group
// is decided when it is accepted and stays its group in the pool.
type Group struct {
	// Name is the group's; "" is the shared pool.
	Name string `json:"name"`
	// CARs and Bytes are the CARs of the group accepted and their bytes;
	// Rejected those of them refused later (their piece did not match).
	CARs     int    `json:"cars"`
	Bytes    uint64 `json:"bytes"`
	Rejected int    `json:"rejected,omitempty"`
	// Deals are the aggregates filled for the group alone that reached
	// READY, and their fill. The shared pool's are the pool's aggregates,
	// which hold the released CARs of the groups too.
	Deals int       `json:"deals"`
	Fill  GroupFill `json:"fill"`
	// Releases is its aggregates released into the shared pool, holding
	// ReleasedCARs.
	Releases     int `json:"releases"`
	ReleasedCARs int `json:"releasedCars"`
	// ToReady is its CARs' time from acceptance to READY, wherever they
	// reached it (the group's aggregate or the pool's).
	ToReady GroupWait `json:"toReady"`
	// Waiting is its CARs still waiting at the end of the log, queued
	// for a piece or in an INGESTING aggregate.
	Waiting int `json:"waiting"`
}

// GroupFill is the fill of a group's aggregates.
type GroupFill struct {
	Min float64 `json:"min"`
	P50 float64 `json:"p50"`
	Max float64 `json:"max"`
}

// GroupWait is a group's CARs' time to READY, in seconds.
type GroupWait struct {
	CARs int     `json:"cars"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	Max  float64 `json:"max"`
}

// Aggregate is one aggregate a policy made.
type Aggregate struct {
	ID uint64 `json:"id"`
	// Group is the group it was filled for ("": the shared pool).
	Group   string  `json:"group,omitempty"`
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
	o := Outcome{Name: r.policy.Name, Settings: r.policy.Fold, Changes: slices.Clone(r.changes),
		Accepted: r.accepted, Rejected: r.rejected, Deals: len(r.aggs), Aggregates: slices.Clone(r.aggs),
		Released: slices.Clone(r.releases), Waiting: Waiting{Queued: len(r.queued)}}
	if r.skipped > 0 {
		o.Skipped = []Count{{events.TypeSettingsChange, r.skipped}}
	}
	if o.Aggregates == nil {
		o.Aggregates = []Aggregate{}
	}
	slices.SortFunc(o.Aggregates, func(a, b Aggregate) int { return cmp.Compare(a.ID, b.ID) })
	slices.SortFunc(o.Released, func(a, b Release) int { return cmp.Compare(a.ID, b.ID) })
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

	// Each CAR still waiting, by its group.
	waiting := make([]int, len(r.groups))
	for _, q := range r.queued {
		waiting[q.group]++
	}
	for _, a := range r.open {
		o.Waiting.Ingesting += len(a.cars)
		for _, c := range a.cars {
			waiting[c.group]++
		}
	}
	var waits []time.Duration
	for _, g := range r.groups {
		waits = append(waits, g.waits...)
	}
	o.ToReady = waitOf(waits)
	if r.grouped {
		o.Groups, o.GroupCounts = r.groupOutcomes(waiting)
	}
	return o
}

// groupOutcomes are the groups' figures, by name, and their counts.
func (r *run) groupOutcomes(waiting []int) ([]Group, *GroupCounts) {
	groups := make([]Group, len(r.groups))
	counts := &GroupCounts{}
	for i, g := range r.groups {
		out := Group{Name: g.name, CARs: g.accepted, Bytes: g.bytes, Rejected: g.rejected, Deals: len(g.fills),
			Releases: g.releases, ReleasedCARs: g.releasedCARs, Waiting: waiting[i]}
		fills := slices.Clone(g.fills)
		slices.Sort(fills)
		if len(fills) > 0 {
			out.Fill = GroupFill{Min: fills[0], P50: quantile(fills, 0.5), Max: fills[len(fills)-1]}
		}
		w := waitOf(g.waits)
		out.ToReady = GroupWait{CARs: w.CARs, P50: w.P50, P90: w.P90, Max: w.Max}
		groups[i] = out
		if g.name != "" {
			counts.Groups++
			if out.Deals > 0 {
				counts.FilledAlone++
			}
			if out.Releases > 0 {
				counts.Released++
			}
		}
	}
	slices.SortFunc(groups, func(a, b Group) int { return cmp.Compare(a.Name, b.Name) })
	return groups, counts
}

// waitOf is the distribution of waits.
func waitOf(waits []time.Duration) Wait {
	waits = slices.Clone(waits)
	slices.Sort(waits)
	var o Wait
	o.CARs = len(waits)
	for _, w := range waits {
		i, _ := slices.BinarySearch(WaitBounds[:], w)
		o.Histogram[i]++
	}
	if len(waits) > 0 {
		sec := func(d time.Duration) float64 { return d.Seconds() }
		o.P50, o.P90 = sec(quantile(waits, 0.5)), sec(quantile(waits, 0.9))
		o.P99, o.Max = sec(quantile(waits, 0.99)), sec(waits[len(waits)-1])
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
