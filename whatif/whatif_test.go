package whatif_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
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

// workload is testutil.Workload of n CARs.
func workload(n int) []events.Event { return workloadOf(n, nil) }

// workloadOf is workload with CAR i's car.replicated carrying source(i).
func workloadOf(n int, source func(i int) json.RawMessage) []events.Event {
	var evs []events.Event
	testutil.Workload(n, source, func(ev events.Event) bool { evs = append(evs, ev); return true })
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
	group   string
	piece   string
	payload uint64
	members []string
}

// liveLog is what a live fold's aggregate log says, read from its
// decisions alone.
type liveLog struct {
	aggs     []liveAggregate // READY, in the order they closed
	releases []whatif.Release
	changes  []events.Settings // the log.settings after the first
	// waits are the CARs' times from acceptance to READY, from the
	// batches' clocks, by the CAR's group.
	waits     map[string][]time.Duration
	readyAggs map[string]int // READY aggregates by their group
	ingesting int            // CARs in INGESTING aggregates at the end
}

func (l *liveLog) allWaits() []time.Duration {
	var all []time.Duration
	for _, w := range l.waits {
		all = append(all, w...)
	}
	slices.Sort(all)
	return all
}

// liveFold runs the aggregator's runner on a real NATS over evs and
// reads back what its aggregate log records.
func liveFold(t *testing.T, cfg events.Settings, evs []events.Event) (*testutil.NATS, *liveLog) {
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

	l := &liveLog{waits: map[string][]time.Duration{}, readyAggs: map[string]int{}}
	var (
		open       = map[uint64][]string{}
		released   = map[uint64][]string{}
		accepted   = map[string]time.Time{}
		groupOf    = map[string]string{}
		firstClock time.Time
		settings   int
	)
	err := jetlog.Tail(ctx, nt.JS, jetlog.StreamAgg, 1, false, func(e jetlog.Entry) error {
		return events.EachBatch(e.Data, func(b *events.Batch) error {
			if firstClock.IsZero() {
				firstClock = b.Now // the first tick's time, once there was one
			}
			for _, d := range b.Decisions {
				if d.Type == events.DecCarQueued || d.Type == events.DecCarAdded && d.Record != nil {
					accepted[d.Car], groupOf[d.Car] = b.Now, d.Group
				}
				switch d.Type {
				case events.DecLogSettings:
					if settings++; settings > 1 {
						l.changes = append(l.changes, *d.Settings)
					}
				case events.DecCarAdded:
					open[d.Aggregate] = append(open[d.Aggregate], d.Car)
				case events.DecAggReleased:
					released[d.Aggregate] = open[d.Aggregate]
					delete(open, d.Aggregate)
					l.releases = append(l.releases, whatif.Release{ID: d.Aggregate, Group: d.Group, Count: d.Count, Why: d.Closed})
				case events.DecCarsRequeued:
					open[d.Aggregate] = append(open[d.Aggregate], released[d.From][d.First:d.First+d.Count]...)
				case events.DecAggReady:
					l.aggs = append(l.aggs, liveAggregate{d.Aggregate, d.Group, d.Piece, d.Payload, open[d.Aggregate]})
					l.readyAggs[d.Group]++
					for _, car := range open[d.Aggregate] {
						at := accepted[car]
						if at.IsZero() { // accepted before the first tick
							at = firstClock
						}
						l.waits[groupOf[car]] = append(l.waits[groupOf[car]], b.Now.Sub(at))
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
	for _, m := range open {
		l.ingesting += len(m)
	}
	return nt, l
}

// recordedOf folds the input log of a live fold under its recorded
// settings, the way ferry whatif does.
func recordedOf(t *testing.T, nt *testutil.NATS, more ...whatif.Policy) (*whatif.Report, int64) {
	t.Helper()
	recorded, err := aggregator.LogSettings(context.Background(), nt.JS)
	if err != nil || recorded == nil {
		t.Fatalf("recorded settings %v, %v", recorded, err)
	}
	policies := append([]whatif.Policy{{Name: "recorded", Fold: *recorded}}, more...)
	f := whatif.New(policies, whatif.Options{Members: true})
	var read atomic.Int64
	if err := whatif.ReadLog(context.Background(), nt.JS, jetlog.DefaultSubjects, f, &read); err != nil {
		t.Fatal(err)
	}
	return f.Report(), read.Load()
}

// sameAsLive checks that a what-if outcome made the aggregates the live
// fold made (ids, groups, members, payloads, pieces), released the same,
// and gives the same waits to READY.
func sameAsLive(t *testing.T, o whatif.Outcome, live *liveLog) {
	t.Helper()
	if len(o.Aggregates) != len(live.aggs) {
		t.Fatalf("whatif made %d aggregates, the live fold %d", len(o.Aggregates), len(live.aggs))
	}
	byID := slices.Clone(live.aggs)
	slices.SortFunc(byID, func(a, b liveAggregate) int { return int(a.id) - int(b.id) })
	for i, a := range o.Aggregates {
		l := byID[i]
		if a.ID != l.id || a.Group != l.group || a.Piece != l.piece || a.Payload != l.payload || !slices.Equal(a.Members, l.members) {
			t.Errorf("aggregate %d: whatif id %d group %q piece %s payload %d %d members; live id %d group %q piece %s payload %d %d members",
				i, a.ID, a.Group, a.Piece, a.Payload, len(a.Members), l.id, l.group, l.piece, l.payload, len(l.members))
		}
	}
	if !slices.Equal(o.Released, live.releases) {
		t.Errorf("whatif released %v; the live fold %v", o.Released, live.releases)
	}
	if o.Waiting.Ingesting != live.ingesting {
		t.Errorf("whatif leaves %d CARs ingesting, the live fold %d", o.Waiting.Ingesting, live.ingesting)
	}
	liveWaits := live.allWaits()
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

// The recorded settings folded by whatif over the input log make exactly
// the aggregates the live fold made: ids, members, payloads, pieces, and
// the same waits to READY.
func TestTheRecordedPolicyReproducesTheLiveFold(t *testing.T) {
	evs := workload(400)
	// An offer of aggregate 1 reaches the live fold; whatif skips it.
	evs = append(evs, &events.DealOffered{Aggregate: 1, Piece: testutil.FakePiece(1, 1<<20).MustV2().String()})
	nt, live := liveFold(t, baseline(), evs)
	if len(live.aggs) < 5 {
		t.Fatalf("the live fold made %d aggregates; the workload should make more", len(live.aggs))
	}
	rep, read := recordedOf(t, nt)
	if want := int64(len(evs)); read != want {
		t.Errorf("read %d inputs, published %d", read, want)
	}
	if want := []whatif.Count{{Type: events.TypeDealOffered, N: 1}}; !slices.Equal(rep.Skipped, want) {
		t.Errorf("skipped %v, want %v", rep.Skipped, want)
	}
	o := rep.Policies[0]
	sameAsLive(t, o, live)
	if o.Groups != nil || o.GroupCounts != nil {
		t.Errorf("an ungrouped policy has groups: %+v %+v", o.GroupCounts, o.Groups)
	}
}

// tenant is CAR i's source in the grouped workloads: two big spaces take
// half the CARs, 25 small ones the rest, two CARs each per hundred (which
// never reach the min payload by the group max wait), and every
// twentieth CAR has no space (the shared pool under source.space); three
// accounts share every space.
func tenant(i int) (space, account string) {
	switch {
	case i%20 == 19:
		space = ""
	case i%4 == 0:
		space = "big-a"
	case i%4 == 1:
		space = "big-b"
	default:
		space = fmt.Sprintf("small-%02d", (i/4)%25)
	}
	return space, fmt.Sprintf("acct-%d", i%3)
}

func tenantSource(i int) json.RawMessage {
	space, account := tenant(i)
	if space == "" {
		return json.RawMessage(fmt.Sprintf(`{"account":%q}`, account))
	}
	return json.RawMessage(fmt.Sprintf(`{"space":%q,"account":%q}`, space, account))
}

func grouped() events.Settings {
	cfg := baseline()
	cfg.GroupBy, cfg.GroupMaxWait = "source.space", 5*time.Minute
	return cfg
}

// groupsFromInputs counts each group's CARs and bytes from the generator
// alone: the space (or, after a settings.change to source.account, the
// account) that tenant gave each CAR.
func groupsFromInputs(evs []events.Event, groupBy string) map[string][2]uint64 {
	out := map[string][2]uint64{}
	for _, ev := range evs {
		switch e := ev.(type) {
		case *events.SettingsChange:
			if e.GroupBy != nil {
				groupBy = *e.GroupBy
			}
		case *events.CarReplicated:
			var i int
			for i = 0; testutil.CarCID(i).String() != e.Car; i++ {
			}
			space, account := tenant(i)
			g := space
			if groupBy == "source.account" {
				g = account
			}
			c := out[g]
			out[g] = [2]uint64{c[0] + 1, c[1] + e.Size}
		}
	}
	return out
}

// Under a grouped policy, with a settings.change that regroups mid-log,
// the recorded policy folded by whatif makes what the live fold made: the
// same aggregates of each group and the pool's, the same releases into
// the pool (at the group max wait, and all at once at the change), and
// the same waits, per group too. The groups' CARs and bytes are those the
// generator gave each tenant. An alternative policy holds its settings
// and skips the change.
func TestTheRecordedGroupedPolicyReproducesTheLiveFold(t *testing.T) {
	evs := workloadOf(600, tenantSource)
	account := "source.account"
	at := len(evs) * 2 / 3
	evs = slices.Insert(evs, at, events.Event(&events.SettingsChange{GroupBy: &account, By: "test"}))
	nt, live := liveFold(t, grouped(), evs)
	rep, _ := recordedOf(t, nt, whatif.Policy{Name: "space", Fold: grouped(), HoldSettings: true})
	o := rep.Policies[0]
	sameAsLive(t, o, live)

	var why = map[string]int{}
	for _, r := range o.Released {
		why[r.Why]++
	}
	if why[events.ReleasedMaxWait] == 0 || why[events.ReleasedSettings] == 0 || len(live.readyAggs) < 4 {
		t.Fatalf("released %v, READY by group %v: the workload should release groups at their max wait and at the change, and fill several", why, live.readyAggs)
	}
	if len(o.Changes) != 1 || len(live.changes) != 1 || o.Changes[0].Settings != live.changes[0] || o.Changes[0].Settings.GroupBy != account {
		t.Errorf("changes %+v; the live log's %+v", o.Changes, live.changes)
	}
	if o.Skipped != nil || !slices.Equal(rep.Policies[1].Skipped, []whatif.Count{{Type: events.TypeSettingsChange, N: 1}}) || rep.Policies[1].Changes != nil {
		t.Errorf("skipped: recorded %v, space %v (changes %v): the alternative alone skips the change", o.Skipped, rep.Policies[1].Skipped, rep.Policies[1].Changes)
	}

	want := groupsFromInputs(evs, "source.space")
	if len(o.Groups) != len(want) {
		t.Errorf("%d groups, the inputs have %d", len(o.Groups), len(want))
	}
	for i, g := range o.Groups {
		if i > 0 && o.Groups[i-1].Name >= g.Name {
			t.Errorf("groups out of order: %q before %q", o.Groups[i-1].Name, g.Name)
		}
		if c := want[g.Name]; uint64(g.CARs) != c[0] || g.Bytes != c[1] {
			t.Errorf("group %q: %d CARs of %d bytes; the inputs give %d of %d", g.Name, g.CARs, g.Bytes, c[0], c[1])
		}
		var releasedCARs int
		for _, r := range live.releases {
			if r.Group == g.Name {
				releasedCARs += r.Count
			}
		}
		if g.Deals != live.readyAggs[g.Name] || g.ReleasedCARs != releasedCARs {
			t.Errorf("group %q: %d deals alone, %d CARs released; the live log: %d, %d", g.Name, g.Deals, g.ReleasedCARs, live.readyAggs[g.Name], releasedCARs)
		}
		w := slices.Clone(live.waits[g.Name])
		slices.Sort(w)
		if g.ToReady.CARs != len(w) || len(w) > 0 && (g.ToReady.P50 != whatifQuantile(w, 0.5) || g.ToReady.Max != w[len(w)-1].Seconds()) {
			t.Errorf("group %q: to READY %+v; the live log's %d waits %v", g.Name, g.ToReady, len(w), w)
		}
		if g.ToReady.CARs+g.Waiting+g.Rejected != g.CARs {
			t.Errorf("group %q: %d READY + %d waiting + %d rejected of %d CARs", g.Name, g.ToReady.CARs, g.Waiting, g.Rejected, g.CARs)
		}
	}
}

func whatifQuantile(sorted []time.Duration, q float64) float64 {
	return sorted[int(math.Ceil(q*float64(len(sorted))))-1].Seconds()
}

// A grouped policy's figures per group add up to what the inputs hold:
// each group's CARs and bytes are those the generator gave its tenant;
// the small tenants, which never reach the min payload by the group max
// wait, fill nothing alone and reach READY only in the pool; the big ones fill deals and release none; and the groups'
// deals, releases, waits and waiting CARs sum to the policy's. The table
// shows the pool and the TopGroups largest groups and sums the rest in
// one line.
func TestGroupFiguresAddUpToTheInputs(t *testing.T) {
	evs := workloadOf(800, tenantSource)
	f := whatif.New([]whatif.Policy{{Name: "recorded", Fold: baseline()}, {Name: "space", Fold: grouped()}}, whatif.Options{})
	f.ApplyAll(inputs(evs))
	rep := f.Report()
	if rep.Policies[0].Groups != nil {
		t.Errorf("the ungrouped policy has groups %v", rep.Policies[0].Groups)
	}
	o := rep.Policies[1]
	want := groupsFromInputs(evs, "source.space")
	if len(o.Groups) != len(want) || o.Groups[0].Name != "" {
		t.Fatalf("%d groups (first %q); the inputs have %d, the pool first", len(o.Groups), o.Groups[0].Name, len(want))
	}
	var deals, released, ready, waiting int
	for _, g := range o.Groups {
		if c := want[g.Name]; uint64(g.CARs) != c[0] || g.Bytes != c[1] {
			t.Errorf("group %q: %d CARs of %d bytes; the inputs give %d of %d", g.Name, g.CARs, g.Bytes, c[0], c[1])
		}
		switch {
		case strings.HasPrefix(g.Name, "small-"):
			// Every CAR of it that reached READY did in the pool; those not
			// released still wait (some released ones wait in the pool).
			if g.Deals != 0 || g.ReleasedCARs == 0 || g.ToReady.CARs > g.ReleasedCARs || g.CARs-g.ReleasedCARs > g.Waiting {
				t.Errorf("small group %q: %d deals alone, %d of %d CARs released, %d waiting", g.Name, g.Deals, g.ReleasedCARs, g.CARs, g.Waiting)
			}
		case strings.HasPrefix(g.Name, "big-"):
			if g.Deals == 0 || g.ReleasedCARs != 0 || g.Fill.Max > 1 || g.Fill.Min <= 0 {
				t.Errorf("big group %q: %d deals alone (fill %+v), %d CARs released", g.Name, g.Deals, g.Fill, g.ReleasedCARs)
			}
		}
		if g.ToReady.CARs+g.Waiting+g.Rejected != g.CARs {
			t.Errorf("group %q: %d READY + %d waiting + %d rejected of %d CARs", g.Name, g.ToReady.CARs, g.Waiting, g.Rejected, g.CARs)
		}
		deals, released, ready, waiting = deals+g.Deals, released+g.ReleasedCARs, ready+g.ToReady.CARs, waiting+g.Waiting
	}
	var releasedAll int
	for _, r := range o.Released {
		releasedAll += r.Count
	}
	if deals != o.Deals || released != releasedAll || ready != o.ToReady.CARs || waiting != o.Waiting.Queued+o.Waiting.Ingesting {
		t.Errorf("groups sum to %d deals, %d released, %d READY, %d waiting; the policy: %d, %d, %d, %+v",
			deals, released, ready, waiting, o.Deals, releasedAll, o.ToReady.CARs, o.Waiting)
	}
	if c := *o.GroupCounts; c != (whatif.GroupCounts{Groups: 27, FilledAlone: 2, Released: 25}) {
		t.Errorf("group counts %+v, want 27 groups (2 big and 25 small tenants), 2 filling alone, 25 released", c)
	}

	// The table: the pool, the largest groups, a line for the rest.
	named := slices.Clone(o.Groups[1:])
	slices.SortStableFunc(named, func(a, b whatif.Group) int { return int(b.Bytes) - int(a.Bytes) })
	var rest int
	for _, g := range named[whatif.TopGroups:] {
		rest += g.CARs
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(text.String(), "groups of space: 27 groups, 2 filled a deal alone, 25 released CARs into the pool\n")
	if !ok {
		t.Fatalf("no group table for the grouped policy:\n%s", text.String())
	}
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 1+1+whatif.TopGroups+1 || !strings.HasPrefix(strings.TrimSpace(lines[1]), "(shared pool)") ||
		!strings.HasPrefix(strings.TrimSpace(lines[2]), named[0].Name) ||
		!strings.HasPrefix(lines[len(lines)-1], fmt.Sprintf("+%d more groups: %d CARs", len(named)-whatif.TopGroups, rest)) {
		t.Errorf("group table (want a header, the pool, %d groups, and the rest's %d CARs):\n%s", whatif.TopGroups, rest, table)
	}
	checkWaitColumns(t, lines[2:2+whatif.TopGroups], named)
}

// checkWaitColumns holds each group's row of the table to its figures: a
// group none of whose CARs reached READY shows no wait ("-"), not 0s.
func checkWaitColumns(t *testing.T, rows []string, groups []whatif.Group) {
	t.Helper()
	for i, g := range groups[:len(rows)] {
		f := strings.Fields(rows[i])
		waits := strings.Join(f[len(f)-4:len(f)-1], " ")
		if (waits == "- - -") != (g.ToReady.CARs == 0) {
			t.Errorf("group %q with %d CARs READY shows waits %q", g.Name, g.ToReady.CARs, waits)
		}
	}
}

// A group whose CARs all still wait (a tenant that never filled a deal
// and was never released) shows no wait in the table.
func TestAGroupWithNoCARReadyShowsNoWait(t *testing.T) {
	cfg := grouped()
	cfg.GroupMaxWait = 0 // never released: the small tenants' CARs wait to the end
	cfg.MinPayload = cfg.DealSize / 2
	evs := workloadOf(300, tenantSource)
	f := whatif.New([]whatif.Policy{{Name: "space", Fold: cfg}}, whatif.Options{})
	f.ApplyAll(inputs(evs))
	rep := f.Report()
	named := slices.Clone(rep.Policies[0].Groups[1:])
	slices.SortStableFunc(named, func(a, b whatif.Group) int { return int(b.Bytes) - int(a.Bytes) })
	if !slices.ContainsFunc(named[:whatif.TopGroups], func(g whatif.Group) bool { return g.ToReady.CARs == 0 }) {
		t.Fatal("no group of the table's has no CAR READY: the test shows nothing")
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	_, table, _ := strings.Cut(text.String(), "groups of space:")
	lines := strings.Split(strings.TrimSpace(table), "\n")
	checkWaitColumns(t, lines[3:3+whatif.TopGroups], named)
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
		evs = append(evs, testutil.Replicated(i, testutil.WorkloadSize(i), true))
		sizes = append(sizes, testutil.WorkloadSize(i))
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
	policies = append(policies, whatif.Policy{Name: "deal=1MiB,maxwait=1m", Fold: small}, whatif.Policy{Name: "space", Fold: grouped()})
	render := func() (j, txt, h []byte) {
		f := whatif.New(policies, whatif.Options{})
		for _, in := range inputs(workloadOf(500, tenantSource)) {
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
	for _, want := range []string{"<svg", "deal=1MiB,maxwait=1m", "CARs by time from acceptance to READY", `<table class="groups">`, "(shared pool)", "big-a"} {
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
// alone and under three, one of them grouped by space (the baseline of
// one fold and the what-if of three, in the same run), and reports the
// MiB the folds hold at the end. The CARs come from many tenants
// (testutil.TenantSource). At CI size it runs as any benchmark; for the 1 M-input
// figures of docs/benchmarks.md:
//
//	go test ./whatif/ -run '^$' -bench Fold -benchtime 1000000x
func BenchmarkFold(b *testing.B) {
	base := baseline()
	small, space := base, base
	small.DealSize, small.MinPayload = 1<<20, 1
	space.GroupBy, space.GroupMaxWait = "source.space", time.Hour
	three := []whatif.Policy{{Name: "recorded", Fold: base}, {Name: "small", Fold: small, HoldSettings: true}, {Name: "space", Fold: space, HoldSettings: true}}
	for _, policies := range [][]whatif.Policy{three[:1], three} {
		b.Run(fmt.Sprintf("policies=%d", len(policies)), func(b *testing.B) { benchFold(b, policies) })
	}
}

func benchFold(b *testing.B, policies []whatif.Policy) {
	ins := inputs(workloadOf(b.N*3/4+1, testutil.TenantSource)) // about 1.4 inputs a CAR
	if len(ins) > b.N {
		ins = ins[:b.N]
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	f := whatif.New(policies, whatif.Options{})
	for i := 0; i < len(ins); i += 1024 {
		f.ApplyAll(ins[i:min(i+1024, len(ins))])
	}
	rep := f.Report()
	// CPU time as well as the wall time: on a shared machine it is the
	// steadier measure of the work done.
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(len(ins)), "cpu-ns/op")
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

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
