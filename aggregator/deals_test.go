package aggregator

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
)

var dealT0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// dealFolder is a folder under cfg that keeps every stored batch, so a
// test can rebuild the state from them as a restarted runner does.
type dealFolder struct {
	folder
	cfg     events.Settings
	batches []events.Batch
}

func newDealFolder(t *testing.T, cfg events.Settings) *dealFolder {
	return &dealFolder{folder: folder{t: t, st: New(cfg)}, cfg: cfg}
}

func (f *dealFolder) apply(ev events.Event) events.Batch {
	b := f.folder.apply(ev)
	if len(b.Decisions) > 0 {
		f.batches = append(f.batches, b)
	}
	return b
}

func (f *dealFolder) tick(d time.Duration) events.Batch {
	return f.apply(&events.Tick{Time: dealT0.Add(d)})
}

// rebuilt is the state replayed from the stored batches.
func (f *dealFolder) rebuilt() *State {
	f.t.Helper()
	st := New(f.cfg)
	for _, b := range f.log { // as stored: the settings first
		if err := st.Replay(b); err != nil {
			f.t.Fatalf("replay: %v", err)
		}
	}
	return st
}

// fill adds n CARs of 6000 bytes (8 KiB pieces) from seed first and closes the aggregate.
func (f *dealFolder) fill(first, n int) events.Decision {
	for i := range n {
		f.apply(testutil.Replicated(first+i, 6000, true))
	}
	return f.apply(&events.AggregateClose{Aggregate: f.st.target("")}).Decisions[0]
}

func TestAnUnansweredOfferIsOfferedAgainAfterTheDealTimeoutThenGivenUp(t *testing.T) {
	cfg := testConfig()
	cfg.DealTimeout, cfg.MaxOffers = time.Hour, 3
	f := newDealFolder(t, cfg)
	f.tick(0)
	ready := f.fill(0, 3)
	f.apply(&events.DealOffered{Aggregate: 1})
	if got := types(f.tick(59 * time.Minute)); got != "" {
		t.Fatalf("before the timeout the tick decided %s", got)
	}
	b := f.tick(time.Hour)
	if got := types(b); got != events.DecAggRetry {
		t.Fatalf("the tick at the timeout decided %q, want %s", got, events.DecAggRetry)
	}
	if d := b.Decisions[0]; d.Aggregate != 1 || d.Count != 1 || !strings.Contains(d.Reason, "no deal report within 1h0m0s of offer 1") {
		t.Fatalf("retry = %+v", d)
	}
	// A restarted fold knows the aggregate is READY again, and is offered
	// for the second time.
	for _, st := range []*State{f.st, f.rebuilt()} {
		if a := st.closed[1]; a.state != Ready || a.tries != 1 {
			t.Fatalf("after the timeout aggregate 1 is %s after %d tries", a.state, a.tries)
		}
	}
	f.apply(&events.DealOffered{Aggregate: 1, Offer: 2})
	if got := types(f.tick(2*time.Hour - time.Second)); got != "" {
		t.Fatalf("the second offer timed out early: %s", got)
	}
	if got := types(f.tick(2 * time.Hour)); got != events.DecAggRetry {
		t.Fatalf("second timeout decided %q", got)
	}
	f.apply(&events.DealOffered{Aggregate: 1, Offer: 3})
	b = f.tick(3 * time.Hour)
	if got := types(b); got != events.DecAggFailed {
		t.Fatalf("the last timeout decided %q, want %s alone (the CARs stay)", got, events.DecAggFailed)
	}
	if r := b.Decisions[0].Reason; r != "gave up after 3 offers: no deal report within 1h0m0s of offer 3" {
		t.Fatalf("reason = %q", r)
	}
	if got := types(f.tick(10 * time.Hour)); got != "" {
		t.Fatalf("a given-up aggregate still ticks: %s", got)
	}
	// The engine's late news still counts... as the operator decides: an
	// order to offer it again starts a fresh count.
	b = f.apply(&events.AggregateReoffer{Aggregate: 1, By: "alice"})
	if got := types(b); got != events.DecAggRetry || b.Decisions[0].Count != 0 || !strings.Contains(b.Decisions[0].Reason, "alice") {
		t.Fatalf("reoffer of a given-up aggregate gave %s %+v", got, b.Decisions)
	}
	f.apply(&events.DealOffered{Aggregate: 1, Offer: 4})
	deals := []events.Deal{{Provider: "f01000", DealID: 1}}
	if got := types(f.apply(&events.DealReport{Aggregate: ready.Piece, Status: events.StatusPublished, Deals: deals})); got != events.DecAggDeals {
		t.Fatalf("deals gave %s", got)
	}
	if got := types(f.tick(20 * time.Hour)); got != "" {
		t.Fatalf("a processed aggregate still ticks: %s", got)
	}
	checkReplays(t, f)
}

// checkReplays holds a rebuilt state to the live one: the same inputs
// after the rebuild decide the same.
func checkReplays(t *testing.T, f *dealFolder) {
	t.Helper()
	st := f.rebuilt()
	more := []events.Event{
		&events.Tick{Time: dealT0.Add(100 * time.Hour)},
		&events.AggregateReoffer{Aggregate: 1, By: "bob"},
		&events.AggregateFail{Aggregate: 2, By: "bob"},
		&events.Tick{Time: dealT0.Add(200 * time.Hour)},
	}
	for i, ev := range more {
		seq := f.seq + uint64(i) + 1
		data := testutil.MustEncode(ev)
		a, b := f.st.Apply(seq, data), st.Apply(seq, data)
		if string(batchJSON(t, a)) != string(batchJSON(t, b)) {
			t.Fatalf("after a rebuild input %d decides\n%s\nnot\n%s", seq, batchJSON(t, b), batchJSON(t, a))
		}
	}
}

// TestAFailingEngineGetsBoundedOffersWithBackoff plays a deal engine that
// fails every offer at once, over six hours of ticks every ten seconds.
// Before the bound and the backoff it was offered something every minute.
func TestAFailingEngineGetsBoundedOffersWithBackoff(t *testing.T) {
	cfg := testConfig() // max-wait 1 min, min payload 16 KiB: 3 CARs close by max-wait
	cfg.MaxOffers, cfg.OfferBackoff = 4, 10*time.Minute
	f := newDealFolder(t, cfg)
	f.tick(0)
	var offers []time.Duration // tick time of each offer
	var last events.Batch
	engine := func(b events.Batch, at time.Duration) {
		for _, d := range b.Decisions {
			if d.Type != events.DecAggReady && d.Type != events.DecAggRetry {
				continue
			}
			offers = append(offers, at)
			f.apply(&events.DealOffered{Aggregate: d.Aggregate})
			last = f.apply(&events.DealReport{Aggregate: d.Piece, Status: events.StatusFailed, Reason: "simulated failure"})
		}
	}
	engine(events.Batch{Decisions: []events.Decision{f.fill(0, 3)}}, 0)
	for at := 10 * time.Second; at <= 6*time.Hour; at += 10 * time.Second {
		engine(f.tick(at), at)
	}
	// Offer, fail, wait 10, 20, 40 min (then max-wait's minute to close
	// the requeued CARs), and give up at the fourth failure.
	want := []time.Duration{0, 11 * time.Minute, 32 * time.Minute, 73 * time.Minute}
	if len(offers) != len(want) {
		t.Fatalf("offers at %v, want %v", offers, want)
	}
	for i := range want {
		if offers[i] != want[i] {
			t.Fatalf("offers at %v, want %v", offers, want)
		}
	}
	d := last.Decisions[0]
	if got := types(last); got != events.DecAggFailed || d.Reason != "gave up after 4 offers: simulated failure" || d.Count != 4 {
		t.Fatalf("the last failure gave %s %+v", got, d)
	}
	if len(f.st.live) != 0 || len(f.st.closed[d.Aggregate].members) != 3 {
		t.Fatalf("the given-up aggregate should keep its 3 CARs")
	}
	checkReplays(t, f)
}

func TestOperatorOrdersForDeals(t *testing.T) {
	cfg := testConfig()
	f := newDealFolder(t, cfg)
	f.fill(0, 3)
	f.apply(&events.DealOffered{Aggregate: 1})
	b := f.apply(&events.AggregateFail{Aggregate: 1, Reason: "the provider lost the sector", By: "alice"})
	if got, want := types(b), events.DecAggFailed+","+events.DecCarsRequeued; got != want {
		t.Fatalf("fail gave %s, want %s", got, want)
	}
	if r := b.Decisions[0].Reason; r != "failed by the operator (alice): the provider lost the sector" {
		t.Fatalf("reason = %q", r)
	}
	cases := []struct {
		name string
		ev   events.Event
		want string
	}{
		{"a failed aggregate whose CARs moved on is not offered again",
			&events.AggregateReoffer{Aggregate: 1}, "its CARs were aggregated again"},
		{"a failed aggregate does not fail again", &events.AggregateFail{Aggregate: 1}, "aggregate 1 is DEAL_FAILED"},
		{"an INGESTING aggregate is not offered", &events.AggregateReoffer{Aggregate: 2}, "aggregate 2 is not closed"},
		{"an unknown aggregate does not fail", &events.AggregateFail{Aggregate: 9}, "aggregate 9 is not closed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := f.apply(tc.ev)
			if got := types(b); got != events.DecInputIgnored || !strings.Contains(b.Decisions[0].Reason, tc.want) {
				t.Fatalf("gave %s %+v, want input.ignored with %q", got, b.Decisions, tc.want)
			}
		})
	}
	ready := f.apply(&events.AggregateClose{Aggregate: 2}).Decisions[0]
	b = f.apply(&events.AggregateReoffer{Aggregate: 2, By: "alice"})
	if got := types(b); got != events.DecAggRetry {
		t.Fatalf("reoffer of a READY aggregate gave %s", got)
	}
	f.apply(&events.DealOffered{Aggregate: 2})
	if got := types(f.apply(&events.AggregateReoffer{Aggregate: 2, By: "bob"})); got != events.DecAggRetry {
		t.Fatalf("reoffer of a DEAL_PENDING aggregate gave %s", got)
	}
	f.apply(&events.DealReport{Aggregate: ready.Piece, Status: events.StatusPublished, Deals: []events.Deal{{Provider: "f01000", DealID: 1}}})
	if got := types(f.apply(&events.AggregateFail{Aggregate: 2})); got != events.DecInputIgnored {
		t.Fatalf("fail of a DEAL_PROCESSED aggregate gave %s", got)
	}
	checkReplays(t, f)
}

// dealConfig turns the deal clock on with short times, so a random log's
// ticks reach them.
func dealConfig() events.Settings {
	cfg := testConfig()
	cfg.DealTimeout, cfg.MaxOffers, cfg.OfferBackoff = 5*time.Minute, 3, time.Minute
	return cfg
}

// TestTheDealClockIsDeterministicAndSurvivesRestarts folds random logs with
// offers, failures, operator orders and ticks under the deal clock: the
// same log decides the same, a restart at any quarter continues the same,
// and the invariant model holds.
func TestTheDealClockIsDeterministicAndSurvivesRestarts(t *testing.T) {
	kinds := map[string]int{}
	for seed := range uint64(8) {
		log := randomLog(seed, 600)
		r := rand.New(rand.NewPCG(seed, 2))
		var mixed [][]byte
		for i, in := range log {
			mixed = append(mixed, in)
			switch r.IntN(12) {
			case 0:
				mixed = append(mixed, testutil.MustEncode(&events.AggregateReoffer{Aggregate: uint64(1 + r.IntN(i/4+1)), By: "op"}))
			case 1:
				mixed = append(mixed, testutil.MustEncode(&events.AggregateFail{Aggregate: uint64(1 + r.IntN(i/4+1)), By: "op"}))
			}
		}
		checkFold(t, dealConfig(), mixed, nil, 4)
		_, batches := foldLog(dealConfig(), mixed)
		for _, b := range batches {
			for _, d := range b.Decisions {
				kinds[d.Type]++
			}
		}
	}
	for _, k := range []string{events.DecAggRetry, events.DecAggFailed, events.DecCarsRequeued, events.DecAggDeals} {
		if kinds[k] == 0 {
			t.Errorf("the random logs never produced %s; the test covers too little", k)
		}
	}
	if !(kinds[events.DecAggRetry] > 0) {
		t.Error("no retries")
	}
}

func TestALateDealCountsForAGivenUpAggregateThatHoldsItsCars(t *testing.T) {
	cfg := testConfig()
	cfg.DealTimeout, cfg.MaxOffers = time.Hour, 1
	f := newDealFolder(t, cfg)
	f.tick(0)
	ready := f.fill(0, 3)
	f.apply(&events.DealOffered{Aggregate: 1})
	if got := types(f.tick(time.Hour)); got != events.DecAggFailed {
		t.Fatalf("the only offer's timeout gave %q", got)
	}
	deals := []events.Deal{{Provider: "f01000", DealID: 1}}
	if got := types(f.apply(&events.DealReport{Aggregate: ready.Piece, Status: events.StatusPublished, Deals: deals})); got != events.DecAggDeals {
		t.Fatalf("the late deal gave %q, want %s", got, events.DecAggDeals)
	}
	// A failed aggregate whose CARs went on takes no deals.
	f2 := newDealFolder(t, testConfig())
	r2 := f2.fill(0, 3)
	f2.apply(&events.DealReport{Aggregate: r2.Piece, Status: events.StatusFailed, Reason: "x"})
	if got := types(f2.apply(&events.DealReport{Aggregate: "1", Status: events.StatusPublished, Deals: deals})); got != events.DecInputIgnored {
		t.Fatalf("deals for a requeued aggregate gave %q", got)
	}
	checkReplays(t, f)
}
