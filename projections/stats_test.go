package projections

import (
	"fmt"
	"maps"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
)

// TestStatsAgreeWithTheRecords folds CARs through the real aggregator
// into every state (queued, rejected, aggregating, READY, DEAL_PENDING,
// DEAL_PROCESSED, DEAL_FAILED with its CARs requeued) and checks after
// every batch that the kept counts and ages are what reading each CAR and
// aggregate back gives; then that a rebuild from the same log keeps them.
func TestStatsAgreeWithTheRecords(t *testing.T) {
	const dealSize = 1 << 20
	st := aggregator.New(events.Settings{DealSize: dealSize, MinPayload: dealSize, MaxWait: 1 << 62, MaxOffers: 3})
	s, err := Open(filepath.Join(t.TempDir(), "views.db"), dealSize)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	f := &folder{st: st, base: base}
	var (
		cars      []string
		log       []LoggedBatch
		queuedAt  = map[string]time.Time{}
		openedAt  = map[uint64]time.Time{}
		offeredAt = map[uint64]time.Time{}
		requeued  bool
	)
	in := func(ev events.Event) {
		t.Helper()
		e, ok := f.fold(ev)
		if !ok {
			return
		}
		for _, d := range e.Batch.Decisions {
			switch d.Type {
			case events.DecCarQueued:
				queuedAt[d.Car] = e.At
			case events.DecCarAdded, events.DecCarsRequeued:
				requeued = requeued || d.Type == events.DecCarsRequeued
				if _, ok := openedAt[d.Aggregate]; !ok {
					openedAt[d.Aggregate] = e.At
				}
			case events.DecAggOffered:
				offeredAt[d.Aggregate] = e.At
			}
		}
		log = append(log, e)
		if err := s.Apply([]LoggedBatch{e}); err != nil {
			t.Fatal(err)
		}
		checkStats(t, s, cars, queuedAt, openedAt, offeredAt)
	}
	for i := range 120 {
		ev := testutil.Replicated(i, uint64(20000+i*97), i%4 != 0)
		if i%17 == 0 {
			ev.MD5 = "not-md5"
		}
		cars = append(cars, ev.Car)
		in(ev)
		if i%8 == 4 { // some queued CARs get their piece
			in(&events.CarPiece{Car: cars[i-4], Piece: testutil.FakePiece(i-4, 20000).MustV2().String()})
		}
	}
	aggs, err := s.Aggregates(aggregator.Ready, 0, 100)
	if err != nil || len(aggs) < 3 {
		t.Fatalf("%d READY aggregates (%v), want 3 or more", len(aggs), err)
	}
	in(&events.DealOffered{Aggregate: aggs[0].ID, Piece: aggs[0].Piece})
	in(&events.DealOffered{Aggregate: aggs[1].ID, Piece: aggs[1].Piece})
	in(&events.DealReport{Aggregate: strconv.FormatUint(aggs[1].ID, 10), Status: events.StatusActive,
		Deals: []events.Deal{{Provider: "f01000", DealID: 7}}})
	in(&events.DealOffered{Aggregate: aggs[2].ID, Piece: aggs[2].Piece})
	in(&events.DealReport{Aggregate: strconv.FormatUint(aggs[2].ID, 10), Status: events.StatusFailed, Reason: "sealing failed"})
	in(&events.Tick{Time: base.Add(time.Hour)})
	in(&events.Tick{Time: base.Add(2 * time.Hour)})

	got := s.Stats()
	for _, state := range []string{aggregator.Queued, aggregator.Rejected, aggregator.Aggregating, aggregator.Ready,
		aggregator.DealPending, aggregator.DealProcessed} {
		if got.Cars[state] == 0 {
			t.Errorf("no CAR %s: the test does not cover that state (%v)", state, got.Cars)
		}
	}
	if !requeued {
		t.Error("no CARs requeued: the test does not cover a failed deal's CARs moving on")
	}
	if got.Aggregates[aggregator.DealFailed] == 0 {
		t.Errorf("no aggregate DEAL_FAILED: the test does not cover that state (%v)", got.Aggregates)
	}
	ages, _ := s.Ages()
	path := filepath.Join(t.TempDir(), "rebuilt.db")
	re := rebuilding(t, path, dealSize, log)
	defer re.Close()
	if again := re.Stats(); !maps.Equal(again.Cars, got.Cars) || !maps.Equal(again.Aggregates, got.Aggregates) {
		t.Fatalf("rebuilt stats %v, applied %v", again, got)
	}
	if again, _ := re.Ages(); again != ages {
		t.Fatalf("rebuilt ages %v, applied %v", again, ages)
	}
}

// checkStats compares Stats and Ages with what reading every CAR and
// aggregate gives, and with the times of the decisions.
func checkStats(t *testing.T, s *Store, cars []string, queuedAt map[string]time.Time, openedAt, offeredAt map[uint64]time.Time) {
	t.Helper()
	want := Stats{Cars: map[string]int64{}, Aggregates: map[string]int64{}}
	var wantAges Ages
	for _, car := range cars {
		v, err := s.Car(car)
		if err != nil {
			continue // not published yet
		}
		want.Cars[v.State]++
		if v.State == aggregator.Queued {
			wantAges.Queued = older(wantAges.Queued, queuedAt[car])
		}
	}
	all, err := s.Aggregates("", 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range all {
		want.Aggregates[a.State]++
		switch a.State {
		case aggregator.Ingesting:
			wantAges.Ingesting = older(wantAges.Ingesting, openedAt[a.ID])
		case aggregator.DealPending:
			wantAges.DealPending = older(wantAges.DealPending, offeredAt[a.ID])
		}
	}
	got := s.Stats()
	if !maps.Equal(got.Cars, want.Cars) || !maps.Equal(got.Aggregates, want.Aggregates) {
		t.Fatalf("stats %v, the records say %v", got, want)
	}
	ages, err := s.Ages()
	if err != nil {
		t.Fatal(err)
	}
	if !ages.Queued.Equal(wantAges.Queued) || !ages.Ingesting.Equal(wantAges.Ingesting) || !ages.DealPending.Equal(wantAges.DealPending) {
		t.Fatalf("ages %s, the decisions say %s", fmtAges(ages), fmtAges(wantAges))
	}
}

func fmtAges(a Ages) string {
	return fmt.Sprintf("queued %s ingesting %s pending %s", a.Queued, a.Ingesting, a.DealPending)
}
