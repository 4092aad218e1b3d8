package whatif

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/frc58"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go/jetstream"
)

// Policy is one way of folding the log: the fold settings it runs under.
// Grouping policies add their fields here.
type Policy struct {
	// Name is how the report names the policy ("recorded" for the log's
	// own settings, the spec given otherwise).
	Name string
	Fold events.Settings
}

// Input is one input of the log and its type (the subject's last part;
// "" decodes the input to find it).
type Input struct {
	aggregator.Input
	Type string
}

// skipped are the input types a what-if cannot replay: they name a live
// aggregate, or carry the world's answer about one (see the package doc).
var skipped = map[string]bool{
	events.TypeDealOffered: true, events.TypeOfferFailed: true, events.TypeDealReport: true,
	events.TypeAggregateClose: true, events.TypeAggReoffer: true, events.TypeAggFail: true,
}

// Options are what a Folder records beyond the report.
type Options struct {
	// Members keeps each aggregate's CARs, in arrival order (tests compare
	// them with a live fold's; a million-CAR log does not need them).
	Members bool
}

// Folder folds inputs under every policy at once. It is not safe for
// concurrent use; ApplyAll folds the policies in parallel itself.
type Folder struct {
	runs    []*run
	inputs  int
	skipped map[string]int
	first   uint64 // sequences of the first and last input
	last    uint64
}

// New returns a Folder of policies, in the order the report gives them.
func New(policies []Policy, o Options) *Folder {
	f := &Folder{skipped: map[string]int{}}
	for _, p := range policies {
		f.runs = append(f.runs, &run{policy: p, opts: o, st: aggregator.New(p.Fold), queued: map[string]time.Time{}})
	}
	return f
}

// Apply folds one input under every policy.
func (f *Folder) Apply(in Input) { f.ApplyAll([]Input{in}) }

// ApplyAll folds inputs, in order, under every policy; the policies fold
// in parallel, each in its own goroutine, which keeps each deterministic.
func (f *Folder) ApplyAll(ins []Input) {
	kept := ins[:0:0]
	for _, in := range ins {
		typ := in.Type
		if typ == "" {
			if ev, err := events.Decode(in.Data); err == nil {
				typ = ev.Kind()
			}
		}
		if f.first == 0 {
			f.first = in.Seq
		}
		f.last = max(f.last, in.Seq)
		f.inputs++
		if skipped[typ] {
			f.skipped[typ]++
			continue
		}
		kept = append(kept, in)
	}
	if len(f.runs) == 1 {
		f.runs[0].applyAll(kept)
		return
	}
	var wg sync.WaitGroup
	for _, r := range f.runs {
		wg.Go(func() { r.applyAll(kept) })
	}
	wg.Wait()
}

// ReadLog folds the whole input log (FERRY_IN, as it is when ReadLog
// starts) into f, reading it with an ephemeral consumer: nothing is
// written. read counts the inputs read, for progress lines.
func ReadLog(ctx context.Context, js jetstream.JetStream, sub jetlog.Subjects, f *Folder, read *atomic.Int64) error {
	const chunk = 1024
	buf := make([]Input, 0, chunk)
	prefix := sub.Input("")
	err := jetlog.Tail(ctx, js, jetlog.StreamIn, 1, false, func(e jetlog.Entry) error {
		var typ string
		if e.Msg != nil {
			typ, _ = strings.CutPrefix(e.Msg.Subject(), prefix)
		}
		buf = append(buf, Input{Input: aggregator.Input{Seq: e.Seq, Data: e.Data, Stored: e.Time}, Type: typ})
		if len(buf) == chunk {
			f.ApplyAll(buf)
			read.Add(int64(len(buf)))
			buf = buf[:0]
		}
		return ctx.Err()
	})
	if err != nil {
		return err
	}
	f.ApplyAll(buf)
	read.Add(int64(len(buf)))
	return nil
}

// run is one policy's fold and what the report needs from it.
type run struct {
	policy Policy
	opts   Options
	st     *aggregator.State

	firstClock time.Time            // the fold's first clock
	queued     map[string]time.Time // CARs waiting for a piece → their acceptance clock
	open       openAgg              // the INGESTING aggregate
	accepted   int
	rejected   int
	aggs       []Aggregate
	waits      []time.Duration // each READY CAR's time from acceptance
}

// openAgg is what the report needs of the INGESTING aggregate.
type openAgg struct {
	id      uint64
	since   []time.Time // the CARs' acceptance clocks, arrival order
	padded  []uint64    // their padded piece sizes
	members []string
}

func (r *run) applyAll(ins []Input) {
	for _, in := range ins {
		b := r.st.ApplyInput(in.Input)
		if r.firstClock.IsZero() && !b.Now.IsZero() {
			r.firstClock = b.Now
		}
		for i := range b.Decisions {
			r.observe(&b.Decisions[i], b.Now)
		}
	}
}

// observe takes what the report needs from a decision made at clock now.
func (r *run) observe(d *events.Decision, now time.Time) {
	switch d.Type {
	case events.DecCarQueued:
		r.accepted++
		r.queued[d.Car] = now
	case events.DecCarRejected:
		r.rejected++
		delete(r.queued, d.Car)
	case events.DecCarAdded:
		at := now
		if d.Record == nil { // its piece came later: accepted when queued
			at = r.queued[d.Car]
			delete(r.queued, d.Car)
		} else {
			r.accepted++
		}
		if len(r.open.since) == 0 {
			r.open.id = d.Aggregate
		}
		r.open.since = append(r.open.since, at)
		r.open.padded = append(r.open.padded, d.PieceSize)
		if r.opts.Members {
			r.open.members = append(r.open.members, d.Car)
		}
	case events.DecAggReady:
		r.ready(d, now)
	}
}

func (r *run) ready(d *events.Decision, now time.Time) {
	a := Aggregate{ID: d.Aggregate, Piece: d.Piece, Count: d.Count, Payload: d.Payload, Closed: d.Closed,
		Members: r.open.members}
	a.Padded, a.Gaps = layoutOf(r.open.padded)
	a.Fill = float64(d.Payload) / float64(capacity(r.policy.Fold.DealSize))
	for _, at := range r.open.since {
		if at.IsZero() {
			at = r.firstClock
		}
		if at.IsZero() { // no tick yet: no time has passed on the log's clock
			at = now
		}
		r.waits = append(r.waits, now.Sub(at))
	}
	r.aggs = append(r.aggs, a)
	r.open = openAgg{}
}

// layoutOf is the padded bytes of pieces and the gaps the FRC-0058
// layout leaves between them: in layout order (frc58.Layout) each piece
// starts at the next multiple of its own size.
func layoutOf(padded []uint64) (sum, gaps uint64) {
	var end uint64
	for _, i := range frc58.Layout(padded) {
		p := padded[i]
		end = (end+p-1)/p*p + p
		sum += p
	}
	return sum, end - sum
}
