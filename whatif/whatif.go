package whatif

import (
	"context"
	"runtime"
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
type Policy struct {
	// Name is how the report names the policy ("recorded" for the log's
	// own settings, the spec given otherwise).
	Name string
	Fold events.Settings
	// HoldSettings holds the policy's settings for the whole log: it skips the
	// log's settings.change inputs (counted in Outcome.Skipped), as every
	// alternative policy of ferry whatif does. A policy that does not hold them
	// folds them as ferry did: the recorded policy is the log's first
	// settings and the changes the operator made from an input on.
	HoldSettings bool
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
	kept    []decoded // ApplyAll's, kept for the next call
	inputs  int
	skipped map[string]int
	first   uint64 // sequences of the first and last input
	last    uint64
}

// New returns a Folder of policies, in the order the report gives them.
func New(policies []Policy, o Options) *Folder {
	f := &Folder{skipped: map[string]int{}}
	for _, p := range policies {
		f.runs = append(f.runs, newRun(p, o))
	}
	return f
}

// Apply folds one input under every policy.
func (f *Folder) Apply(in Input) { f.ApplyAll([]Input{in}) }

// ApplyAll folds inputs, in order, under every policy. Each input is
// decoded once for all policies (the decoding shared among the cores),
// then the policies fold in parallel, each in its own goroutine, which
// keeps each deterministic.
func (f *Folder) ApplyAll(ins []Input) {
	kept := f.kept[:0]
	for _, in := range ins {
		if f.first == 0 {
			f.first = in.Seq
		}
		f.last = max(f.last, in.Seq)
		f.inputs++
		if skipped[in.Type] { // known by its subject: not even decoded
			f.skipped[in.Type]++
			continue
		}
		kept = append(kept, decoded{Input: in})
	}
	inParallel(len(kept), func(i int) {
		if d := &kept[i]; len(d.Data) <= events.MaxInputBytes {
			d.ev, _ = events.Decode(d.Data) // one that does not decode is the fold's to record
		}
	})
	n := 0
	for _, d := range kept {
		if d.Type == "" && d.ev != nil {
			d.Type = d.ev.Kind()
		}
		if skipped[d.Type] {
			f.skipped[d.Type]++
			continue
		}
		kept[n] = d
		n++
	}
	kept = kept[:n]
	f.kept = kept
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

// decoded is an input and its event (nil: the fold decodes it, and
// records why it does not decode).
type decoded struct {
	Input
	ev events.Event
}

// inParallel calls fn(0) … fn(n-1), shared among as many goroutines as
// Go runs at once.
func inParallel(n int, fn func(i int)) {
	parts := min(runtime.GOMAXPROCS(0), max(n/64, 1))
	var wg sync.WaitGroup
	for p := range parts {
		wg.Go(func() {
			for i := p * n / parts; i < (p+1)*n/parts; i++ {
				fn(i)
			}
		})
	}
	wg.Wait()
}

// ReadLog folds the whole input log (FERRY_IN, as it is when ReadLog
// starts) into f, reading it with an ephemeral consumer: nothing is
// written. The read runs ahead of the fold by a few chunks, so that
// reading and folding overlap. read counts the inputs folded, for
// progress lines.
func ReadLog(ctx context.Context, js jetstream.JetStream, sub jetlog.Subjects, f *Folder, read *atomic.Int64) error {
	const chunk, ahead = 1024, 4
	chunks := make(chan []Input, ahead)
	var wg sync.WaitGroup
	wg.Go(func() {
		for c := range chunks {
			f.ApplyAll(c)
			read.Add(int64(len(c)))
		}
	})
	buf := make([]Input, 0, chunk)
	prefix := sub.Input("")
	err := jetlog.Tail(ctx, js, jetlog.StreamIn, 1, false, func(e jetlog.Entry) error {
		var typ string
		if e.Msg != nil {
			typ, _ = strings.CutPrefix(e.Msg.Subject(), prefix)
		}
		buf = append(buf, Input{Input: aggregator.Input{Seq: e.Seq, Data: e.Data, Stored: e.Time}, Type: typ})
		if len(buf) == chunk {
			select {
			case chunks <- buf:
			case <-ctx.Done():
				return ctx.Err()
			}
			buf = make([]Input, 0, chunk)
		}
		return ctx.Err()
	})
	if err == nil {
		chunks <- buf
	}
	close(chunks)
	wg.Wait()
	return err
}

// run is one policy's fold and what the report needs from it.
type run struct {
	policy Policy
	opts   Options
	st     *aggregator.State

	firstClock time.Time            // the fold's first clock
	settings   bool                 // the fold has recorded its settings (its first log.settings)
	grouped    bool                 // the fold grouped CARs at some point
	changes    []Change             // the log.settings decided after the first
	skipped    int                  // settings.change inputs it did not fold
	queued     map[string]queuedCar // CARs waiting for a piece
	open       map[uint64]*openAgg  // the INGESTING aggregates, by id
	// released are the released aggregates whose CARs the cars.requeued
	// of the same batch have not all placed yet.
	released   map[uint64]*openAgg
	accepted   int
	rejected   int
	aggs       []Aggregate
	releases   []Release
	groupIndex map[string]int32 // a group's name → its place in groups
	groups     []*groupRun
	padded     []uint64 // ready's, kept for the next
}

// queuedCar is a CAR waiting for its piece.
type queuedCar struct {
	at    time.Time // its acceptance clock
	group int32     // its group (an index in run.groups)
}

// carAt is a CAR in an INGESTING aggregate.
type carAt struct {
	at     time.Time // its acceptance clock, which a requeue keeps
	padded uint64    // its padded piece size
	group  int32     // its own group, which a release into the pool keeps
}

// openAgg is what the report needs of an INGESTING aggregate.
type openAgg struct {
	cars    []carAt // arrival order
	members []string
}

// groupRun is what a run counts of one group: the CARs whose group it is
// and the aggregates filled for it.
type groupRun struct {
	name         string
	accepted     int
	rejected     int
	bytes        uint64
	fills        []float64       // of the READY aggregates of the group
	releases     int             // its aggregates released into the pool
	releasedCARs int             // the CARs they held
	waits        []time.Duration // its CARs' time from acceptance to READY
}

func newRun(p Policy, o Options) *run {
	return &run{policy: p, opts: o, st: aggregator.New(p.Fold), queued: map[string]queuedCar{},
		open: map[uint64]*openAgg{}, released: map[uint64]*openAgg{}, groupIndex: map[string]int32{},
		grouped: p.Fold.GroupBy != ""}
}

func (r *run) applyAll(ins []decoded) {
	for _, in := range ins {
		if in.Type == events.TypeSettingsChange && r.policy.HoldSettings {
			r.skipped++
			continue
		}
		b := r.st.ApplyEvent(in.Input.Input, in.ev)
		if r.firstClock.IsZero() && !b.Now.IsZero() {
			r.firstClock = b.Now
		}
		for i := range b.Decisions {
			r.observe(&b.Decisions[i], b.In, b.Now)
		}
	}
}

// group is the index of the group named name, counted from now on.
func (r *run) group(name string) int32 {
	i, ok := r.groupIndex[name]
	if !ok {
		i = int32(len(r.groups))
		r.groupIndex[name] = i
		r.groups = append(r.groups, &groupRun{name: name})
	}
	return i
}

// agg is the INGESTING aggregate id, opened by this decision if new.
func (r *run) agg(id uint64) *openAgg {
	a := r.open[id]
	if a == nil {
		a = &openAgg{}
		r.open[id] = a
	}
	return a
}

// observe takes what the report needs from a decision of the batch of
// input in, made at clock now.
func (r *run) observe(d *events.Decision, in uint64, now time.Time) {
	switch d.Type {
	case events.DecLogSettings:
		if r.settings {
			r.changes = append(r.changes, Change{In: in, Settings: *d.Settings})
		}
		r.settings = true
		r.grouped = r.grouped || d.Settings.GroupBy != ""
	case events.DecCarQueued:
		g := r.group(d.Group)
		r.accept(g, d.Record.Size)
		r.queued[d.Car] = queuedCar{at: now, group: g}
	case events.DecCarRejected:
		r.rejected++
		if q, ok := r.queued[d.Car]; ok { // accepted, then its piece refused it
			r.groups[q.group].rejected++
			delete(r.queued, d.Car)
		}
	case events.DecCarAdded:
		c := carAt{at: now, padded: d.PieceSize}
		if d.Record == nil { // its piece came later: accepted when queued
			q := r.queued[d.Car]
			delete(r.queued, d.Car)
			c.at, c.group = q.at, q.group
		} else {
			c.group = r.group(d.Group)
			r.accept(c.group, d.Record.Size)
		}
		a := r.agg(d.Aggregate)
		a.cars = append(a.cars, c)
		if r.opts.Members {
			a.members = append(a.members, d.Car)
		}
	case events.DecAggReleased:
		a := r.open[d.Aggregate]
		delete(r.open, d.Aggregate)
		g := r.groups[r.group(d.Group)]
		g.releases++
		g.releasedCARs += d.Count
		r.releases = append(r.releases, Release{ID: d.Aggregate, Group: d.Group, Count: d.Count, Why: d.Closed})
		if a != nil && len(a.cars) > 0 {
			r.released[d.Aggregate] = a
		}
	case events.DecCarsRequeued:
		// Only a released aggregate's: the deals that fail in a live fold
		// are not in a what-if (see the package doc).
		from := r.released[d.From]
		if from == nil {
			return
		}
		a := r.agg(d.Aggregate)
		end := d.First + d.Count
		a.cars = append(a.cars, from.cars[d.First:end]...)
		if r.opts.Members {
			a.members = append(a.members, from.members[d.First:end]...)
		}
		if end == len(from.cars) {
			delete(r.released, d.From)
		}
	case events.DecAggReady:
		r.ready(d, now)
	}
}

func (r *run) accept(g int32, size uint64) {
	r.accepted++
	r.groups[g].accepted++
	r.groups[g].bytes += size
}

func (r *run) ready(d *events.Decision, now time.Time) {
	open := r.open[d.Aggregate]
	delete(r.open, d.Aggregate)
	if open == nil {
		open = &openAgg{}
	}
	padded := r.padded[:0]
	for _, c := range open.cars {
		padded = append(padded, c.padded)
	}
	r.padded = padded
	a := Aggregate{ID: d.Aggregate, Group: d.Group, Piece: d.Piece, Count: d.Count, Payload: d.Payload, Closed: d.Closed,
		Members: open.members}
	a.Padded, a.Gaps = layoutOf(padded)
	a.Fill = float64(d.Payload) / float64(capacity(r.policy.Fold.DealSize))
	g := r.groups[r.group(d.Group)]
	g.fills = append(g.fills, a.Fill)
	for _, c := range open.cars {
		at := c.at
		if at.IsZero() {
			at = r.firstClock
		}
		if at.IsZero() { // no tick yet: no time has passed on the log's clock
			at = now
		}
		w := r.groups[c.group]
		w.waits = append(w.waits, now.Sub(at))
	}
	r.aggs = append(r.aggs, a)
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
