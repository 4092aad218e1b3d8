package whatif_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/frc58"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/piece"
	"github.com/ferry-dev/ferry/whatif"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func carSize(i int) uint64 { return 1<<10 + uint64(i*7919)%(199<<10+1) }

// workload is n CARs as a storage service and the piece workers would
// send them: every fifth CAR without its piece, which a car.piece brings
// about fifteen CARs (two minutes) later; a tick every fourth CAR, 30 s
// apart.
func workload(n int) []events.Event {
	var evs []events.Event
	var late []int // CARs whose car.piece is due
	clock := t0
	for i := range n {
		withPiece := i%5 != 0
		evs = append(evs, testutil.Replicated(i, carSize(i), withPiece))
		if !withPiece {
			late = append(late, i)
		}
		if len(late) > 3 && i%5 == 3 {
			j := late[0]
			late = late[1:]
			p := testutil.FakePiece(j, carSize(j))
			evs = append(evs, &events.CarPiece{Car: testutil.CarCID(j).String(), Piece: p.MustV2().String(), PieceSize: p.Padded})
		}
		if i%4 == 0 {
			clock = clock.Add(30 * time.Second)
			evs = append(evs, &events.Tick{Time: clock})
		}
	}
	return evs
}

func inputs(evs []events.Event) []whatif.Input {
	ins := make([]whatif.Input, len(evs))
	for i, ev := range evs {
		ins[i] = whatif.Input{Input: aggregator.Input{Seq: uint64(i + 1), Data: testutil.MustEncode(ev)}}
	}
	return ins
}

func baseline() events.Settings {
	return events.Settings{DealSize: 2 << 20, MinPayload: 512 << 10, MaxWait: 10 * time.Minute}
}

// liveAggregate is an aggregate as the aggregate log records it.
type liveAggregate struct {
	id      uint64
	piece   string
	payload uint64
	members []string
}

// liveFold runs the aggregator's runner on a real NATS over evs and
// returns the aggregates its log records, the CARs' waits to READY read
// from its batches' clocks, and the CARs left in its INGESTING aggregate.
func liveFold(t *testing.T, cfg events.Settings, evs []events.Event) (*testutil.NATS, []liveAggregate, []time.Duration, int) {
	nt := testutil.StartNATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	if err := jetlog.EnsureStreams(ctx, nt.JS, jetlog.StreamOptions{Subjects: jetlog.DefaultSubjects}); err != nil {
		t.Fatal(err)
	}
	r := aggregator.NewRunner(nt.JS, aggregator.RunnerConfig{Fold: cfg, Subjects: jetlog.DefaultSubjects, Holder: "test",
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	var wg sync.WaitGroup
	wg.Go(func() { _ = r.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	pub := jetlog.NewPublisher(nt.JS, jetlog.DefaultSubjects)
	var last uint64
	for _, ev := range evs {
		p, err := pub.Publish(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		last = p.Seq
	}
	testutil.Eventually(t, 30*time.Second, "the runner applied every input", func() bool { return r.Status().LastIn >= last })
	testutil.Eventually(t, 10*time.Second, "the aggregate log holds every batch", func() bool {
		return testutil.Msgs(t, nt.JS, jetlog.StreamAgg) >= r.Status().AggSeq
	})

	var (
		aggs       []liveAggregate
		open       = map[uint64][]string{}
		accepted   = map[string]time.Time{}
		waits      []time.Duration
		firstClock time.Time
	)
	err := jetlog.Tail(ctx, nt.JS, jetlog.StreamAgg, 1, false, func(e jetlog.Entry) error {
		return events.EachBatch(e.Data, func(b *events.Batch) error {
			if firstClock.IsZero() {
				firstClock = b.Now // the first tick's time, once there was one
			}
			for _, d := range b.Decisions {
				if d.Type == events.DecCarQueued || d.Type == events.DecCarAdded && d.Record != nil {
					accepted[d.Car] = b.Now
				}
				switch d.Type {
				case events.DecCarAdded:
					open[d.Aggregate] = append(open[d.Aggregate], d.Car)
				case events.DecAggReady:
					aggs = append(aggs, liveAggregate{d.Aggregate, d.Piece, d.Payload, open[d.Aggregate]})
					for _, car := range open[d.Aggregate] {
						at := accepted[car]
						if at.IsZero() { // accepted before the first tick
							at = firstClock
						}
						waits = append(waits, b.Now.Sub(at))
					}
					delete(open, d.Aggregate)
				}
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	ingesting := 0
	for _, m := range open {
		ingesting += len(m)
	}
	return nt, aggs, waits, ingesting
}

// The recorded settings folded by whatif over the input log make exactly
// the aggregates the live fold made: ids, members, payloads, pieces, and
// the same waits to READY.
func TestTheRecordedPolicyReproducesTheLiveFold(t *testing.T) {
	evs := workload(400)
	// An offer of aggregate 1 reaches the live fold; whatif skips it.
	evs = append(evs, &events.DealOffered{Aggregate: 1, Piece: testutil.FakePiece(1, 1<<20).MustV2().String()})
	nt, live, liveWaits, liveIngesting := liveFold(t, baseline(), evs)
	if len(live) < 5 {
		t.Fatalf("the live fold made %d aggregates; the workload should make more", len(live))
	}

	recorded, err := aggregator.LogSettings(context.Background(), nt.JS)
	if err != nil || recorded == nil {
		t.Fatalf("recorded settings %v, %v", recorded, err)
	}
	f := whatif.New([]whatif.Policy{{Name: "recorded", Fold: *recorded}}, whatif.Options{Members: true})
	var read atomic.Int64
	if err := whatif.ReadLog(context.Background(), nt.JS, jetlog.DefaultSubjects, f, &read); err != nil {
		t.Fatal(err)
	}
	rep := f.Report()
	if got, want := read.Load(), int64(len(evs)); got != want {
		t.Errorf("read %d inputs, published %d", got, want)
	}
	if want := []whatif.Count{{Type: events.TypeDealOffered, N: 1}}; !slices.Equal(rep.Skipped, want) {
		t.Errorf("skipped %v, want %v", rep.Skipped, want)
	}
	o := rep.Policies[0]
	if len(o.Aggregates) != len(live) {
		t.Fatalf("whatif made %d aggregates, the live fold %d", len(o.Aggregates), len(live))
	}
	for i, a := range o.Aggregates {
		l := live[i]
		if a.ID != l.id || a.Piece != l.piece || a.Payload != l.payload || !slices.Equal(a.Members, l.members) {
			t.Errorf("aggregate %d: whatif id %d piece %s payload %d %d members; live id %d piece %s payload %d %d members",
				i, a.ID, a.Piece, a.Payload, len(a.Members), l.id, l.piece, l.payload, len(l.members))
		}
	}
	if o.Waiting.Ingesting != liveIngesting {
		t.Errorf("whatif leaves %d CARs ingesting, the live fold %d", o.Waiting.Ingesting, liveIngesting)
	}
	slices.Sort(liveWaits)
	if got, want := o.ToReady.CARs, len(liveWaits); got != want {
		t.Fatalf("%d waits, live %d", got, want)
	}
	q := func(p float64) float64 { return liveWaits[int(math.Ceil(p*float64(len(liveWaits))))-1].Seconds() }
	want := []float64{q(0.5), q(0.9), q(0.99), q(1)}
	if got := []float64{o.ToReady.P50, o.ToReady.P90, o.ToReady.P99, o.ToReady.Max}; !slices.Equal(got, want) {
		t.Errorf("to READY p50, p90, p99, max: %v s; the live log's clocks give %v s", got, want)
	}
	var hist [len(whatif.WaitBounds) + 1]int
	for _, w := range liveWaits {
		i, _ := slices.BinarySearch(whatif.WaitBounds[:], w)
		hist[i]++
	}
	if o.ToReady.Histogram != hist {
		t.Errorf("to READY histogram %v; the live log's waits give %v", o.ToReady.Histogram, hist)
	}
}

// greedy packs CARs of sizes, in arrival order, into deals of dealSize
// beside their FRC-0058 index, from the sizes alone: the payload of each
// deal.
func greedy(sizes []uint64, dealSize uint64) []uint64 {
	room := dealSize - frc58.IndexReserve(dealSize)
	var payloads []uint64
	var used, payload uint64
	var count int
	for _, s := range sizes {
		p := piece.PaddedSize(s)
		if count > 0 && (used+p > room || count+1 > frc58.MaxEntries(dealSize)) {
			payloads = append(payloads, payload)
			used, payload, count = 0, 0, 0
		}
		used, payload, count = used+p, payload+s, count+1
	}
	return payloads
}

// With a max wait no tick reaches, aggregates close only when full, so a
// smaller deal makes more, smaller aggregates: as many, with the payloads,
// that packing the CAR sizes by hand gives.
func TestASmallerDealMakesMoreSmallerAggregates(t *testing.T) {
	const n = 600
	var evs []events.Event
	var sizes []uint64
	for i := range n {
		evs = append(evs, testutil.Replicated(i, carSize(i), true))
		sizes = append(sizes, carSize(i))
	}
	never := baseline()
	never.MaxWait = 1000 * time.Hour
	small := never
	small.DealSize, small.MinPayload = 512<<10, 1
	f := whatif.New([]whatif.Policy{{Name: "recorded", Fold: never}, {Name: "deal=512KiB", Fold: small}}, whatif.Options{})
	f.ApplyAll(inputs(evs))
	rep := f.Report()
	for i, p := range rep.Policies {
		want := greedy(sizes, p.Settings.DealSize)
		var got []uint64
		for _, a := range p.Aggregates {
			got = append(got, a.Payload)
		}
		if !slices.Equal(got, want) {
			t.Errorf("policy %d (%s): payloads %v, packing by hand gives %v", i, p.Name, got, want)
		}
	}
	big, little := rep.Policies[0], rep.Policies[1]
	if little.Deals <= big.Deals {
		t.Errorf("512KiB deals: %d aggregates of %d bytes; 2MiB deals: %d of %d", little.Deals, little.Bytes.Payload, big.Deals, big.Bytes.Payload)
	}
	if little.Fill.Max > 1 || big.Fill.Min <= 0 {
		t.Errorf("fills out of range: %+v %+v", little.Fill, big.Fill)
	}
}

// The same inputs and policies give the same report, byte for byte, as
// JSON, text and HTML; the HTML is one page with its charts inline.
func TestTheReportIsDeterministic(t *testing.T) {
	policies := []whatif.Policy{{Name: "recorded", Fold: baseline()}}
	small := baseline()
	small.DealSize, small.MaxWait = 1<<20, time.Minute
	policies = append(policies, whatif.Policy{Name: "deal=1MiB,maxwait=1m", Fold: small})
	render := func() (j, txt, h []byte) {
		f := whatif.New(policies, whatif.Options{})
		for _, in := range inputs(workload(500)) {
			f.Apply(in)
		}
		rep := f.Report()
		var a, b, c bytes.Buffer
		if err := rep.WriteJSON(&a); err != nil {
			t.Fatal(err)
		}
		if err := rep.WriteText(&b); err != nil {
			t.Fatal(err)
		}
		if err := rep.WriteHTML(&c); err != nil {
			t.Fatal(err)
		}
		return a.Bytes(), b.Bytes(), c.Bytes()
	}
	j1, t1, h1 := render()
	j2, t2, h2 := render()
	if !bytes.Equal(j1, j2) || !bytes.Equal(t1, t2) || !bytes.Equal(h1, h2) {
		t.Fatal("two runs gave different reports")
	}
	for _, want := range []string{"<svg", "deal=1MiB,maxwait=1m", "CARs by time from acceptance to READY"} {
		if !bytes.Contains(h1, []byte(want)) {
			t.Errorf("the HTML report lacks %q", want)
		}
	}
	for _, never := range []string{"<script", "src=", "href="} {
		if bytes.Contains(h1, []byte(never)) {
			t.Errorf("the HTML report has %q: it must stand alone", never)
		}
	}
	if n := bytes.Count(h1, []byte("<svg")); n != 2*len(policies) {
		t.Errorf("%d charts, want 2 per policy", n)
	}
}

// BenchmarkFold folds b.N synthetic inputs under the recorded policy
// alone and under three (the baseline of one fold and the what-if of
// three, in the same run), and reports the MiB the folds hold at the end.
// At CI size it runs as any benchmark; for the 1 M-input figures of
// docs/benchmarks.md:
//
//	go test ./whatif/ -run '^$' -bench Fold -benchtime 1000000x
func BenchmarkFold(b *testing.B) {
	base := baseline()
	small, long := base, base
	small.DealSize, small.MinPayload = 1<<20, 1
	long.MaxWait = 24 * time.Hour
	three := []whatif.Policy{{Name: "recorded", Fold: base}, {Name: "small", Fold: small}, {Name: "long", Fold: long}}
	for _, policies := range [][]whatif.Policy{three[:1], three} {
		b.Run(fmt.Sprintf("policies=%d", len(policies)), func(b *testing.B) { benchFold(b, policies) })
	}
}

func benchFold(b *testing.B, policies []whatif.Policy) {
	ins := inputs(workload(b.N*3/4 + 1)) // about 1.4 inputs a CAR
	if len(ins) > b.N {
		ins = ins[:b.N]
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ReportAllocs()
	b.ResetTimer()
	f := whatif.New(policies, whatif.Options{})
	for i := 0; i < len(ins); i += 1024 {
		f.ApplyAll(ins[i:min(i+1024, len(ins))])
	}
	rep := f.Report()
	b.StopTimer()
	// What the folds hold at the end, beside the inputs (which a read of
	// the log does not keep).
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-min(before.HeapAlloc, after.HeapAlloc))/(1<<20), "MiB-held")
	runtime.KeepAlive(f)
	runtime.KeepAlive(rep)
	runtime.KeepAlive(ins) // held before too: not part of the difference
}
