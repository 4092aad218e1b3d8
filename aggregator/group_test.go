package aggregator

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
)

// The grouping rules (Settings.GroupBy, GroupMaxWait, settings.change),
// each case a sequence of inputs with the decisions each must cause, and
// the aggregates the log ends with as InvariantModel reads them.

var groupT0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func groupConfig() events.Settings {
	cfg := testConfig() // 64 KiB deals, min payload 16 KiB, max wait 1m
	cfg.GroupBy, cfg.GroupMaxWait = "source.space", 10*time.Minute
	return cfg
}

// tenantCar is CAR n with its piece, of size bytes, from a space ("": a
// source that names none).
func tenantCar(n int, size uint64, space string) *events.CarReplicated {
	e := testutil.Replicated(n, size, true)
	if space != "" {
		e.Source = json.RawMessage(fmt.Sprintf(`{"account":"acct-%s","space":%q}`, space, space))
	}
	return e
}

func tickAt(d time.Duration) *events.Tick { return &events.Tick{Time: groupT0.Add(d)} }

func ptr[T any](v T) *T { return &v }

type groupStep struct {
	ev   events.Event
	want string // the decisions' types, comma-separated
}

type wantAgg struct {
	id    uint64
	state string
	group string
	cars  []int // testutil.CarCID numbers, in arrival order
}

const (
	big   = 12000 // pads to 16 KiB: three fill a 64 KiB deal, two hold the min payload
	small = 1000
)

func TestGroupingRules(t *testing.T) {
	added, ready, released, requeued := events.DecCarAdded, events.DecAggReady, events.DecAggReleased, events.DecCarsRequeued
	join := func(types ...string) string { return strings.Join(types, ",") }
	cases := []struct {
		name  string
		cfg   func(*events.Settings)
		steps []groupStep
		aggs  []wantAgg
		check func(t *testing.T, log []events.Batch)
	}{{
		name: "a group fills a deal on its own, the others' CARs kept out",
		steps: []groupStep{
			{tickAt(0), ""},
			{tenantCar(1, big, "big"), added},
			{tenantCar(2, small, "small"), added},
			{tenantCar(3, big, "big"), added},
			{tenantCar(4, big, "big"), added},
			{tenantCar(5, big, "big"), join(ready, added)},
		},
		aggs: []wantAgg{
			{1, Ready, "big", []int{1, 3, 4}},
			{2, Ingesting, "small", []int{2}},
			{3, Ingesting, "big", []int{5}},
		},
	}, {
		name: "a group short of the min payload is released into the pool at its group max wait, in arrival order",
		steps: []groupStep{
			{tickAt(0), ""},
			{tenantCar(1, small, ""), added},
			{tenantCar(2, small, "small"), added},
			{tenantCar(3, small, "small"), added},
			{tickAt(10*time.Minute - time.Second), ""},
			{tickAt(10 * time.Minute), join(released, requeued)},
			{tenantCar(4, small, "small"), added}, // the group starts again
		},
		aggs: []wantAgg{
			{1, Ingesting, "", []int{1, 2, 3}},
			{2, Released, "small", []int{2, 3}},
			{3, Ingesting, "small", []int{4}},
		},
		check: func(t *testing.T, log []events.Batch) {
			d := decisionsOf(log, events.DecCarsRequeued)[0]
			if d.From != 2 || d.First != 0 || d.Count != 2 || d.Aggregate != 1 || d.Group != "" {
				t.Errorf("requeue = %+v, want aggregate 2's two CARs into pool aggregate 1", d)
			}
			r := decisionsOf(log, events.DecAggReleased)[0]
			if r.Group != "small" || r.Count != 2 || r.Closed != events.ReleasedMaxWait {
				t.Errorf("release = %+v", r)
			}
		},
	}, {
		name: "a group holding the min payload is closed by max wait, not released",
		cfg:  func(c *events.Settings) { c.GroupMaxWait = 30 * time.Second },
		steps: []groupStep{
			{tickAt(0), ""},
			{tenantCar(1, big, "mid"), added},
			{tenantCar(2, big, "mid"), added},
			{tickAt(30 * time.Second), ""},
			{tickAt(time.Minute), ready},
		},
		aggs: []wantAgg{{1, Ready, "mid", []int{1, 2}}},
		check: func(t *testing.T, log []events.Batch) {
			if d := decisionsOf(log, events.DecAggReady)[0]; d.Closed != events.ClosedMaxWait || d.Group != "mid" {
				t.Errorf("ready = %+v, want closed by max-wait, group mid", d)
			}
		},
	}, {
		name: "groups are released in the order they opened, closing the pool full between runs",
		cfg:  func(c *events.Settings) { c.MaxWait = time.Hour },
		steps: []groupStep{
			{tickAt(0), ""},
			{tenantCar(1, big, "b"), added},
			{tenantCar(2, big, ""), added},
			{tenantCar(3, big, "a"), added},
			{tenantCar(4, big, ""), added},
			{tickAt(10 * time.Minute), join(released, requeued, released, ready, requeued)},
		},
		aggs: []wantAgg{
			{1, Released, "b", []int{1}},
			{2, Ready, "", []int{2, 4, 1}},
			{3, Released, "a", []int{3}},
			{4, Ingesting, "", []int{3}},
		},
	}, {
		name: "a failed deal of a grouped aggregate goes back into its group",
		steps: []groupStep{
			{tickAt(0), ""},
			{tenantCar(1, big, "g"), added},
			{tenantCar(2, big, "g"), added},
			{&events.AggregateClose{Aggregate: 1}, ready},
			{&events.DealOffered{Aggregate: 1}, events.DecAggOffered},
			{tenantCar(3, small, "g"), added},
			{tenantCar(4, small, "h"), added},
			{&events.DealReport{Aggregate: "1", Status: events.StatusFailed, Reason: "no provider"}, join(events.DecAggFailed, requeued)},
		},
		aggs: []wantAgg{
			{1, DealFailed, "g", []int{1, 2}},
			{2, Ingesting, "g", []int{3, 1, 2}},
			{3, Ingesting, "h", []int{4}},
		},
		check: func(t *testing.T, log []events.Batch) {
			if d := decisionsOf(log, events.DecCarsRequeued)[0]; d.Group != "g" || d.Aggregate != 2 {
				t.Errorf("requeue = %+v, want into group g's aggregate 2", d)
			}
		},
	}, {
		name: "a group max wait of zero never releases",
		cfg:  func(c *events.Settings) { c.GroupMaxWait = 0 },
		steps: []groupStep{
			{tickAt(0), ""},
			{tenantCar(1, small, "free"), added},
			{tickAt(1000 * time.Hour), ""},
		},
		aggs: []wantAgg{{1, Ingesting, "free", []int{1}}},
	}, {
		name: "aggregates opened before the first tick start their clocks at it, in id order",
		steps: []groupStep{
			{tenantCar(1, small, "x"), added},
			{tenantCar(2, small, ""), added},
			{tickAt(0), join(events.DecAggClock, events.DecAggClock)},
			{tickAt(10 * time.Minute), join(released, requeued)},
		},
		aggs: []wantAgg{{1, Released, "x", []int{1}}, {2, Ingesting, "", []int{2, 1}}},
	}, {
		name: "ending grouping releases every group's aggregate at once, in id order",
		steps: []groupStep{
			{tenantCar(1, small, "x"), added},
			{tenantCar(2, small, "y"), added},
			{&events.SettingsChange{GroupBy: ptr(events.GroupNone), By: "op"}, join(events.DecLogSettings, released, requeued, released, requeued)},
			{tenantCar(3, small, "x"), added},
		},
		aggs: []wantAgg{
			{1, Released, "x", []int{1}},
			{2, Released, "y", []int{2}},
			{3, Ingesting, "", []int{1, 2, 3}},
		},
		check: func(t *testing.T, log []events.Batch) {
			for _, d := range decisionsOf(log, events.DecAggReleased) {
				if d.Closed != events.ReleasedSettings {
					t.Errorf("release = %+v, want closed %q", d, events.ReleasedSettings)
				}
			}
		},
	}, {
		name: "grouping starts from the input that orders it",
		cfg:  func(c *events.Settings) { c.GroupBy = "" },
		steps: []groupStep{
			{tenantCar(1, small, "s"), added},
			{&events.SettingsChange{GroupBy: ptr("source.space"), By: "op"}, events.DecLogSettings},
			{tenantCar(2, small, "s"), added},
		},
		aggs: []wantAgg{{1, Ingesting, "", []int{1}}, {2, Ingesting, "s", []int{2}}},
	}, {
		name: "a CAR's group is decided when it is accepted, and ends with its path",
		steps: []groupStep{
			{testutilQueued(1, "s"), events.DecCarQueued},
			{testutilQueued(2, "t"), events.DecCarQueued},
			{carPiece(1), added},
			{&events.SettingsChange{GroupBy: ptr("source.account"), By: "op"}, join(events.DecLogSettings, released, requeued)},
			{carPiece(2), added},
		},
		aggs: []wantAgg{{1, Released, "s", []int{1}}, {2, Ingesting, "", []int{1, 2}}},
		check: func(t *testing.T, log []events.Batch) {
			q := decisionsOf(log, events.DecCarQueued)
			if q[0].Group != "s" || q[1].Group != "t" {
				t.Errorf("car.queued groups %q %q, want s t", q[0].Group, q[1].Group)
			}
		},
	}, {
		name: "values that name no group go to the pool; numbers and booleans name one",
		steps: []groupStep{
			{rawSource(1, `{"space":null}`), added},
			{rawSource(2, `{"space":{"id":"x"}}`), added},
			{rawSource(3, `{"space":""}`), added},
			{rawSource(4, `{"space":"`+strings.Repeat("x", events.MaxGroup+1)+`"}`), added},
			{rawSource(7, `{"space":7}`), added},
			{rawSource(8, `{"space":true}`), added},
			{rawSource(9, `{"space":"`+strings.Repeat("x", events.MaxGroup)+`"}`), added},
			{rawSource(5, `{"account":"a"}`), join(ready, added)}, // a fifth entry does not fit a 64 KiB deal
			{rawSource(6, ``), added},
		},
		aggs: []wantAgg{
			{1, Ready, "", []int{1, 2, 3, 4}},
			{2, Ingesting, "7", []int{7}},
			{3, Ingesting, "true", []int{8}},
			{4, Ingesting, strings.Repeat("x", events.MaxGroup), []int{9}},
			{5, Ingesting, "", []int{5, 6}},
		},
	}, {
		name: "a settings.change that is not a policy, or changes nothing, is ignored with the reason",
		steps: []groupStep{
			{&events.SettingsChange{GroupBy: ptr("space")}, events.DecInputIgnored},
			{&events.SettingsChange{MinPayload: ptr(uint64(testDeal + 1))}, events.DecInputIgnored},
			{&events.SettingsChange{GroupBy: ptr("source.space")}, events.DecInputIgnored},
			{&events.SettingsChange{By: "op"}, events.DecInputIgnored},
			{&events.SettingsChange{MaxWait: ptr(-time.Second)}, events.DecInputIgnored},
		},
		check: func(t *testing.T, log []events.Batch) {
			var reasons []string
			for _, d := range decisionsOf(log, events.DecInputIgnored) {
				reasons = append(reasons, d.Reason)
			}
			for i, want := range []string{"source.space", "more than", "already", "changes nothing", "negative"} {
				if i >= len(reasons) || !strings.Contains(reasons[i], want) {
					t.Errorf("reason %d = %q, want it to say %q", i, reasons, want)
				}
			}
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := groupConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			f := &folder{t: t, st: New(cfg)}
			for i, s := range tc.steps {
				if got := types(f.apply(s.ev)); got != s.want {
					t.Fatalf("step %d (%s): decisions %q, want %q", i, s.ev.Kind(), got, s.want)
				}
			}
			m := NewInvariantModel()
			for _, b := range f.log {
				if err := m.Apply(b); err != nil {
					t.Fatal(err)
				}
			}
			if err := m.Check(cfg.DealSize); err != nil {
				t.Fatal(err)
			}
			var got []wantAgg
			for _, a := range m.Aggregates() {
				w := wantAgg{id: a.ID, state: a.State, group: a.Group}
				for _, car := range a.Cars {
					w.cars = append(w.cars, carNumber(t, car))
				}
				got = append(got, w)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.aggs) {
				t.Errorf("aggregates\n got %v\nwant %v", got, tc.aggs)
			}
			if tc.check != nil {
				tc.check(t, f.log)
			}
			ingesting := 0
			for _, a := range m.Aggregates() {
				if a.State == Ingesting {
					ingesting += len(a.Cars)
				}
			}
			if got := f.st.Counts(); got.IngestingCount != ingesting {
				t.Errorf("Counts: %d CARs INGESTING; the model has %d", got.IngestingCount, ingesting)
			}
			checkRebuild(t, cfg, f.log, f.st)
		})
	}
}

func decisionsOf(log []events.Batch, typ string) []events.Decision {
	var out []events.Decision
	for _, b := range log {
		for _, d := range b.Decisions {
			if d.Type == typ {
				out = append(out, d)
			}
		}
	}
	return out
}

func carNumber(t *testing.T, car string) int {
	for n := range 1000 {
		if testutil.CarCID(n).String() == car {
			return n
		}
	}
	t.Fatalf("CAR %s is not a testutil CAR", car)
	return -1
}

func testutilQueued(n int, space string) *events.CarReplicated {
	e := tenantCar(n, small, space)
	e.Piece = ""
	return e
}

func carPiece(n int) *events.CarPiece {
	p := testutil.FakePiece(n, small)
	return &events.CarPiece{Car: testutil.CarCID(n).String(), Piece: p.MustV2().String()}
}

func rawSource(n int, source string) *events.CarReplicated {
	e := tenantCar(n, small, "")
	if source != "" {
		e.Source = json.RawMessage(source)
	}
	return e
}

// checkRebuild holds a state rebuilt from log (Replay), and one loaded
// from its snapshot, to the state that folded it.
func checkRebuild(t *testing.T, cfg events.Settings, log []events.Batch, st *State) {
	t.Helper()
	want := st.MarshalSnapshot(nil)
	fresh := New(cfg)
	for _, b := range log {
		if err := fresh.Replay(b); err != nil {
			t.Fatalf("replay: %v", err)
		}
	}
	// Inputs that decided nothing are not on the log: the runner takes
	// the position and clock past them from the input log.
	fresh.lastIn, fresh.now = st.lastIn, st.now
	if got := fresh.MarshalSnapshot(nil); string(got) != string(want) || fresh.Counts() != st.Counts() {
		t.Fatalf("the state rebuilt from the log encodes otherwise than the folding one (counts %+v, %+v)", fresh.Counts(), st.Counts())
	}
	loaded, err := LoadSnapshot(want, cfg, st.Accepted())
	if err != nil {
		t.Fatal(err)
	}
	if got := loaded.MarshalSnapshot(nil); string(got) != string(want) || loaded.Counts() != st.Counts() {
		t.Fatalf("the state loaded from its snapshot encodes otherwise (counts %+v, %+v)", loaded.Counts(), st.Counts())
	}
}

// groupedLog is randomLog with tenants: each car.replicated names one of
// six spaces (or none), and now and then a settings.change switches the
// grouping on or off or changes its waits.
func groupedLog(seed uint64, n int) [][]byte {
	r := rand.New(rand.NewPCG(seed, 7))
	var out [][]byte
	for _, in := range randomLog(seed, n) {
		ev, err := events.Decode(in)
		if e, ok := ev.(*events.CarReplicated); err == nil && ok {
			if k := r.IntN(7); k > 0 {
				e.Source = json.RawMessage(fmt.Sprintf(`{"space":"s%d","account":"a%d"}`, k, k%3))
			}
			in = testutil.MustEncode(e)
		}
		out = append(out, in)
		if r.IntN(150) == 0 {
			ch := &events.SettingsChange{By: fmt.Sprint(len(out))}
			switch r.IntN(4) {
			case 0:
				ch.GroupBy = ptr([]string{"none", "source.space", "source.account"}[r.IntN(3)])
			case 1:
				ch.GroupMaxWait = ptr(time.Duration(r.IntN(5)) * time.Minute)
			case 2:
				ch.MinPayload = ptr(uint64(r.IntN(32)) << 10)
			default:
				ch.MaxWait = ptr(time.Duration(r.IntN(3)) * time.Minute)
			}
			out = append(out, testutil.MustEncode(ch))
		}
	}
	return out
}

func TestGroupedLogsKeepEveryInvariant(t *testing.T) {
	kinds := map[string]int{}
	for seed := uint64(1); seed <= 4; seed++ {
		log := groupedLog(seed, 3000)
		a, batches := foldLog(groupConfig(), log)
		if b, _ := foldLog(groupConfig(), log); string(a) != string(b) {
			t.Fatalf("seed %d: two folds of one grouped log differ", seed)
		}
		m := NewInvariantModel()
		for _, b := range batches {
			if err := m.Apply(b); err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			for _, d := range b.Decisions {
				kinds[d.Type]++
			}
		}
		if err := m.Check(testDeal); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		groups := map[string]bool{}
		for _, ag := range m.Aggregates() {
			groups[ag.Group] = true
		}
		if len(groups) < 4 {
			t.Errorf("seed %d: aggregates of only %d groups; the log covers too little", seed, len(groups))
		}
	}
	for _, k := range []string{events.DecAggReleased, events.DecCarsRequeued, events.DecLogSettings, events.DecAggFailed} {
		if kinds[k] < 3 {
			t.Errorf("the grouped logs made %d %s; they cover too little", kinds[k], k)
		}
	}
}

func TestGroupedLogsRebuildAndLoadFromSnapshots(t *testing.T) {
	for seed := uint64(1); seed <= 2; seed++ {
		checkSnapshots(t, groupConfig(), seqInputs(groupedLog(seed, 600)), 8, 200)
	}
}

func TestARestartedGroupedFoldContinuesExactlyLikeTheOriginal(t *testing.T) {
	log := groupedLog(5, 2000)
	want, _ := foldLog(groupConfig(), log)
	for _, cut := range []int{1, 500, 1400} {
		_, batches := foldLog(groupConfig(), log[:cut])
		st := New(groupConfig())
		var got []byte
		for _, b := range batches {
			if err := st.Replay(b); err != nil {
				t.Fatalf("cut %d: %v", cut, err)
			}
			data, _ := json.Marshal(b)
			got = append(append(got, data...), '\n')
		}
		for i := int(st.LastIn()); i < len(log); i++ {
			b := st.Apply(uint64(i+1), log[i])
			if len(b.Decisions) > 0 {
				data, _ := json.Marshal(b)
				got = append(append(got, data...), '\n')
			}
		}
		if string(got) != string(want) {
			t.Fatalf("cut %d: the restarted grouped fold differs", cut)
		}
	}
}
