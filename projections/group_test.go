package projections

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
)

// groupWalk is an independent reading of a grouped aggregate log: each
// CAR's group and aggregate, each aggregate's group, state and members,
// taken from the decisions alone.
type groupWalk struct {
	carGroup  map[string]string
	carAgg    map[string]uint64
	aggGroup  map[uint64]string
	aggState  map[uint64]string
	aggClosed map[uint64]string
	members   map[uint64][]string
	settings  *events.Settings
	// What the log covered, so that the test knows it tested it.
	released       map[string]int // by why
	requeuedGroup  int            // cars.requeued into a group's aggregate (a failed deal's)
	maxIngesting   int
	midLogSettings int
	queuedAt       map[string]time.Time
	openedAt       map[uint64]time.Time
	offeredAt      map[uint64]time.Time
}

func newGroupWalk() *groupWalk {
	return &groupWalk{carGroup: map[string]string{}, carAgg: map[string]uint64{}, aggGroup: map[uint64]string{},
		aggState: map[uint64]string{}, aggClosed: map[uint64]string{}, members: map[uint64][]string{},
		released: map[string]int{}, queuedAt: map[string]time.Time{}, openedAt: map[uint64]time.Time{},
		offeredAt: map[uint64]time.Time{}}
}

func (g *groupWalk) join(id uint64, group string, car string, at time.Time) {
	if _, ok := g.aggState[id]; !ok {
		g.aggState[id], g.aggGroup[id], g.openedAt[id] = aggregator.Ingesting, group, at
	}
	g.members[id] = append(g.members[id], car)
	g.carAgg[car] = id
}

func (g *groupWalk) batch(e LoggedBatch) {
	for _, d := range e.Batch.Decisions {
		switch d.Type {
		case events.DecLogSettings:
			if g.settings != nil {
				g.midLogSettings++
			}
			g.settings = d.Settings
		case events.DecCarQueued:
			g.carGroup[d.Car], g.queuedAt[d.Car] = d.Group, e.At
		case events.DecCarAdded:
			g.carGroup[d.Car] = d.Group
			g.join(d.Aggregate, d.Group, d.Car, e.At)
		case events.DecCarsRequeued:
			if d.Group != "" {
				g.requeuedGroup++
			}
			for _, car := range g.members[d.From][d.First : d.First+d.Count] {
				g.join(d.Aggregate, d.Group, car, e.At)
			}
		case events.DecAggReady:
			g.aggState[d.Aggregate], g.aggClosed[d.Aggregate] = aggregator.Ready, d.Closed
		case events.DecAggReleased:
			g.aggState[d.Aggregate], g.aggClosed[d.Aggregate] = aggregator.Released, d.Closed
			g.released[d.Closed]++
		case events.DecAggOffered:
			g.aggState[d.Aggregate], g.offeredAt[d.Aggregate] = aggregator.DealPending, e.At
		case events.DecAggRetry:
			g.aggState[d.Aggregate] = aggregator.Ready
		case events.DecAggDeals:
			g.aggState[d.Aggregate] = aggregator.DealProcessed
		case events.DecAggFailed:
			g.aggState[d.Aggregate] = aggregator.DealFailed
		}
	}
	n := 0
	for _, st := range g.aggState {
		if st == aggregator.Ingesting {
			n++
		}
	}
	g.maxIngesting = max(g.maxIngesting, n)
}

// check reads every CAR and aggregate back and compares them with the
// walk, and the counts and ages with the records.
func (g *groupWalk) check(t *testing.T, s *Store, cars []string) {
	t.Helper()
	for _, car := range cars {
		group, known := g.carGroup[car]
		if !known {
			continue
		}
		v, err := s.Car(car)
		if err != nil {
			t.Fatalf("CAR %s: %v", car, err)
		}
		wantState, wantAgg := aggregator.Queued, g.carAgg[car]
		if wantAgg != 0 {
			wantState = carStateOf(g.aggState[wantAgg])
		}
		if v.Group != group || v.Aggregate != wantAgg || v.State != wantState {
			t.Fatalf("CAR %s: group %q aggregate %d %s; the log says group %q aggregate %d %s",
				car, v.Group, v.Aggregate, v.State, group, wantAgg, wantState)
		}
		// The status API's rendering of the group is json.Marshal's.
		marshalled, _ := json.Marshal(v)
		if got, err := s.AppendCarJSON(nil, car); err != nil || string(got) != string(marshalled) {
			t.Fatalf("CAR %s rendered as\n%s (%v), json.Marshal gives\n%s", car, got, err, marshalled)
		}
	}
	for id, st := range g.aggState {
		a, err := s.Aggregate(strconv.FormatUint(id, 10), 0, 0)
		if err != nil {
			t.Fatalf("aggregate %d: %v", id, err)
		}
		if a.State != st || a.Group != g.aggGroup[id] || a.Count != len(g.members[id]) || a.Closed != g.aggClosed[id] {
			t.Fatalf("aggregate %d: %s group %q count %d closed %q; the log says %s group %q count %d closed %q",
				id, a.State, a.Group, a.Count, a.Closed, st, g.aggGroup[id], len(g.members[id]), g.aggClosed[id])
		}
		if (st == aggregator.Released) == a.ReleasedAt.IsZero() {
			t.Fatalf("aggregate %d %s released at %s", id, a.State, a.ReleasedAt)
		}
	}
	got, err := s.Settings()
	if err != nil || !reflect.DeepEqual(got, g.settings) {
		t.Fatalf("settings %+v (%v), the log's latest %+v", got, err, g.settings)
	}
	checkStats(t, s, cars, g.queuedAt, g.openedAt, g.offeredAt)
}

// TestGroupsInTheReadModels folds CARs of several groups through the real
// aggregator (grouped by source.space): groups filling side by side with
// the pool, one closing full and its deal failing back into its group,
// groups released into the pool at their max wait and by a change of
// groupBy, and a mid-log change of settings. After every batch each
// CAR's group, state and aggregate, each aggregate's group, state and
// count, the settings, counts and ages agree with a walk of the
// decisions; a rebuild from the log agrees too.
func TestGroupsInTheReadModels(t *testing.T) {
	const dealSize = 1 << 20
	st := aggregator.New(events.Settings{DealSize: dealSize, MinPayload: 300_000, MaxWait: time.Hour,
		GroupBy: "source.space", GroupMaxWait: 10 * time.Minute, MaxOffers: 3})
	s, err := Open(filepath.Join(t.TempDir(), "views.db"), dealSize)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	walk := newGroupWalk()
	f := &folder{st: st, base: base}
	var (
		cars  []string
		log   []LoggedBatch
		clock = base
	)
	in := func(ev events.Event) {
		t.Helper()
		e, ok := f.fold(ev)
		if !ok {
			return
		}
		log = append(log, e)
		walk.batch(e)
		if err := s.Apply([]LoggedBatch{e}); err != nil {
			t.Fatal(err)
		}
		walk.check(t, s, cars)
	}
	tick := func(d time.Duration) {
		clock = clock.Add(d)
		in(&events.Tick{Time: clock})
	}
	var queued []int
	car := func(i int, source string) {
		ev := testutil.Replicated(i, 20_000, i%5 != 0)
		if source != "" {
			ev.Source = json.RawMessage(source)
		}
		if ev.Piece == "" {
			queued = append(queued, i)
		}
		cars = append(cars, ev.Car)
		in(ev)
	}
	pieces := func() {
		for _, i := range queued {
			in(&events.CarPiece{Car: testutil.CarCID(i).String(), Piece: testutil.FakePiece(i, 20_000).MustV2().String()})
		}
		queued = nil
	}
	tick(0)
	for i := range 80 {
		switch {
		case i%4 < 2:
			car(i, `{"space":"a"}`)
		case i%4 == 2 && i < 20:
			car(i, `{"space":"b","n":`+strconv.Itoa(i)+`}`)
		case i%4 == 2:
			car(i, `{"space":""}`) // the pool: an empty name
		default:
			car(i, "")
		}
		if i%10 == 9 {
			tick(time.Minute)
		}
	}
	pieces()
	tick(3 * time.Minute) // past group max wait: b and a's open aggregate are released
	// Group a's READY aggregate fails its deal: its CARs go back to a.
	var aReady uint64
	for id, grp := range walk.aggGroup {
		if grp == "a" && walk.aggState[id] == aggregator.Ready {
			aReady = id
		}
	}
	if aReady == 0 {
		t.Fatal("no READY aggregate of group a: the test does not cover a grouped close")
	}
	in(&events.DealOffered{Aggregate: aReady, Piece: mustAggPiece(t, s, aReady)})
	in(&events.DealReport{Aggregate: strconv.FormatUint(aReady, 10), Status: events.StatusFailed, Reason: "sealing failed"})
	for i := 80; i < 100; i++ {
		car(i, `{"space":"`+[]string{"c", "a"}[i%2]+`"}`)
	}
	pieces()
	minPayload := uint64(250_000)
	in(&events.SettingsChange{MinPayload: &minPayload, By: "test/1"})
	none := events.GroupNone
	in(&events.SettingsChange{GroupBy: &none, By: "test/2"}) // releases every group's aggregate
	for i := 100; i < 110; i++ {
		car(i, `{"space":"a"}`) // no grouping now: the pool
	}
	pieces()
	tick(2 * time.Hour)

	switch {
	case walk.released[events.ReleasedMaxWait] == 0 || walk.released[events.ReleasedSettings] == 0:
		t.Fatalf("releases %v: the test does not cover both reasons", walk.released)
	case walk.requeuedGroup == 0:
		t.Fatal("no CARs requeued into a group: the test does not cover a grouped failed deal")
	case walk.maxIngesting < 3:
		t.Fatalf("at most %d aggregates INGESTING at once: the test does not cover groups filling side by side", walk.maxIngesting)
	case walk.midLogSettings < 2:
		t.Fatalf("%d log.settings mid-log", walk.midLogSettings)
	}
	moved := 0
	for c, grp := range walk.carGroup {
		if id := walk.carAgg[c]; grp != "" && id != 0 && walk.aggGroup[id] == "" {
			moved++
		}
	}
	if moved == 0 {
		t.Fatal("no CAR of a group in the pool's aggregate: the test does not cover a release")
	}

	re := rebuilding(t, filepath.Join(t.TempDir(), "rebuilt.db"), dealSize, log)
	defer re.Close()
	walk.check(t, re, cars)
}

func mustAggPiece(t *testing.T, s *Store, id uint64) string {
	t.Helper()
	a, err := s.Aggregate(strconv.FormatUint(id, 10), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return a.Piece
}

// folder folds inputs through the real aggregator into aggregate-log
// entries, one message per batch that decides anything, stored a second
// apart after base.
type folder struct {
	st          *aggregator.State
	base        time.Time
	seq, aggSeq uint64
}

func (f *folder) fold(ev events.Event) (LoggedBatch, bool) {
	f.seq++
	b := f.st.Apply(f.seq, testutil.MustEncode(ev))
	if len(b.Decisions) == 0 {
		return LoggedBatch{}, false
	}
	f.aggSeq++
	return LoggedBatch{Seq: f.aggSeq, Batch: b, At: f.base.Add(time.Duration(f.seq) * time.Second)}, true
}
