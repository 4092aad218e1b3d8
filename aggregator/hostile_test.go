package aggregator

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
)

// natsMaxPayload is NATS's default message limit: no input can be larger,
// and no batch may be (less room for headers: maxMessageBytes).
const natsMaxPayload = 1 << 20

func encodedSize(t testing.TB, b events.Batch) int {
	t.Helper()
	data, err := events.EncodeBatch(nil, &b)
	if err != nil {
		t.Fatal(err)
	}
	return len(data)
}

// Issue 15, finding 1: a car of 100,000 '<' made a car.rejected that
// repeated it twice, JSON-escaped six-fold, over NATS's 1 MiB.
func TestAHugeCarTextMakesASmallRejection(t *testing.T) {
	good := testutil.Replicated(1, 1000, true)
	for _, tc := range []struct {
		name, car, want, because string
	}{
		{"100,000 '<'", strings.Repeat("<", 100_000), events.DecCarRejected, "(100000 bytes)"},
		// Over NATS the input log refuses it (events.MaxInputBytes); a log
		// made without that limit has it refused here, unread.
		{"600 KB of 'x'", strings.Repeat("x", 600_000), events.DecInputIgnored, "more than the 262144 an input may have"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFolder(t)
			// As the producer sent it: the characters raw, not escaped.
			b := f.raw(fmt.Sprintf(`{"type":"car.replicated","version":1,"car":"%s","size":1000,"md5":%q,"urls":[%q]}`,
				tc.car, good.MD5, good.URLs[0]))
			if types(b) != tc.want {
				t.Fatalf("decisions %s, want %s", types(b), tc.want)
			}
			d := b.Decisions[0]
			if d.Car != "" || !strings.Contains(d.Reason, tc.because) {
				t.Fatalf("decision car %d bytes, reason %q: want no car and %q", len(d.Car), d.Reason, tc.because)
			}
			if n := encodedSize(t, f.log[0]); n > 1024 {
				t.Fatalf("the batch encodes to %d bytes", n)
			}
			// The next good event is taken.
			if got := types(f.apply(good)); got != events.DecCarAdded {
				t.Fatalf("the next event gave %s", got)
			}
		})
	}
}

// hostileInputs are inputs built to make the largest decisions the fold
// can: every string an input carries at its bound or far past it, in
// characters JSON escapes six-fold, for every type and field.
func hostileInputs(fill int) [][]byte {
	lt := func(n int) string { return strings.Repeat("<", n) }
	car := testutil.CarCID(1).String()
	var out [][]byte
	enc := func(v any) {
		data, err := json.Marshal(v)
		if err != nil {
			panic(err)
		}
		out = append(out, data)
	}
	rep := func(mut func(e *events.CarReplicated)) {
		e := testutil.Replicated(7, 1000, true)
		e.Type, e.Version = events.TypeCarReplicated, 1
		mut(e)
		enc(e)
	}
	rep(func(e *events.CarReplicated) { e.Car = lt(fill) })
	rep(func(e *events.CarReplicated) { e.MD5 = lt(fill) })
	rep(func(e *events.CarReplicated) { e.Piece = lt(fill) })
	rep(func(e *events.CarReplicated) { e.ReplicatedAt = lt(fill) })
	rep(func(e *events.CarReplicated) { e.Source = json.RawMessage(`"` + lt(fill) + `"`) })
	rep(func(e *events.CarReplicated) { e.Source = json.RawMessage(`"` + lt(events.MaxSource/6-2) + `"`) })
	rep(func(e *events.CarReplicated) { e.URLs = []string{"https://a/" + lt(fill)} })
	rep(func(e *events.CarReplicated) {
		// The largest record the rules accept: 16 URLs at their bound.
		e.Piece = ""
		e.URLs = nil
		for range events.MaxURLs {
			e.URLs = append(e.URLs, "https://a/"+lt(events.MaxURLLength-10))
		}
	})
	enc(map[string]any{"type": lt(fill), "version": 1})
	enc(map[string]any{"type": events.TypeCarReplicated, "version": 2, "car": lt(fill)})
	enc(map[string]any{"type": events.TypeCarReplicated, "version": 1, "car": car, "size": lt(fill)})
	enc(&events.CarPiece{Header: events.Header{Type: events.TypeCarPiece, Version: 1}, Car: lt(fill), Piece: lt(fill)})
	enc(&events.CarPiece{Header: events.Header{Type: events.TypeCarPiece, Version: 1}, Car: car, Piece: lt(fill)})
	enc(&events.CarInvalid{Header: events.Header{Type: events.TypeCarInvalid, Version: 1}, Car: car, Reason: lt(fill)})
	enc(&events.AggregateClose{Header: events.Header{Type: events.TypeAggregateClose, Version: 1}, Aggregate: 1, By: lt(fill)})
	enc(&events.OfferFailed{Header: events.Header{Type: events.TypeOfferFailed, Version: 1}, Aggregate: 1, Reason: lt(fill)})
	enc(&events.DealOffered{Header: events.Header{Type: events.TypeDealOffered, Version: 1}, Aggregate: 1, Piece: lt(fill), Engine: lt(fill)})
	report := func(r events.DealReport) {
		r.Header = events.Header{Type: events.TypeDealReport, Version: 1}
		enc(&r)
	}
	report(events.DealReport{Aggregate: lt(fill), Status: events.StatusPublished})
	report(events.DealReport{Aggregate: "1", Status: lt(fill)})
	report(events.DealReport{Aggregate: "1", Status: events.StatusFailed, Reason: lt(fill)})
	report(events.DealReport{Aggregate: "1", Status: events.StatusPublished, Deals: []events.Deal{{Provider: lt(fill), DealID: 1}}})
	many := func(n int, provider string) []events.Deal {
		deals := make([]events.Deal, n)
		for i := range deals {
			deals[i] = events.Deal{Provider: provider, DealID: uint64(i + 1), ExpirationEpoch: 1 << 40}
		}
		return deals
	}
	report(events.DealReport{Aggregate: "1", Status: events.StatusPublished, Deals: many(events.MaxDeals, strings.Repeat("f", events.MaxProvider))})
	report(events.DealReport{Aggregate: "1", Status: events.StatusPublished, Deals: many(fill/40, "f01000")})
	return out
}

// Issue 15, finding 1: no input of at most NATS's max payload makes a batch
// the aggregate log refuses. Each hostile input is folded into a state
// with a queued CAR, an INGESTING and a READY aggregate, so that every
// kind of decision is in reach.
func TestNoInputUpToTheMaxPayloadMakesABatchTheLogRefuses(t *testing.T) {
	largest := 0
	for _, fill := range []int{200, 64 << 10, events.MaxInputBytes - 400, natsMaxPayload - 400} {
		for i, in := range hostileInputs(fill) {
			if len(in) > natsMaxPayload {
				continue // NATS would not carry it
			}
			f := newFolder(t)
			f.apply(testutil.Replicated(1, 40_000, true))
			f.apply(&events.AggregateClose{Aggregate: 1})
			f.apply(testutil.Replicated(2, 1000, true))
			f.apply(testutil.Replicated(3, 1000, false))
			f.seq++
			b := f.st.Apply(f.seq, in)
			n := encodedSize(t, b)
			largest = max(largest, n)
			if n > natsMaxPayload-1024 {
				t.Fatalf("input %d (fill %d, %d bytes) made a batch of %d bytes: %s", i, fill, len(in), n, types(b))
			}
		}
	}
	t.Logf("largest batch: %d bytes", largest)
}

// FuzzBatchBound holds the same bound over arbitrary inputs.
func FuzzBatchBound(f *testing.F) {
	for _, in := range hostileInputs(2000) {
		f.Add(in)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > natsMaxPayload {
			return
		}
		s := New(testConfig())
		s.Apply(1, testutil.MustEncode(testutil.Replicated(1, 40_000, true)))
		s.Apply(2, testutil.MustEncode(&events.AggregateClose{Aggregate: 1}))
		if n := encodedSize(t, s.Apply(3, in)); n > natsMaxPayload-1024 {
			t.Fatalf("a %d-byte input made a %d-byte batch", len(in), n)
		}
	})
}

// Issue 15, finding 3: a second copy of an accepted CAR with another size
// or md5 is a conflict on the record, not a duplicate; the same copy is a
// duplicate; a corrected event for a rejected CAR is accepted.
func TestACopyOfAnAcceptedCarIsADuplicateOrAConflict(t *testing.T) {
	f := newFolder(t)
	bad := testutil.Replicated(1, 1000, true)
	good := *bad
	bad.MD5 = "0123"
	if got := types(f.apply(bad)); got != events.DecCarRejected {
		t.Fatalf("bad md5 gave %s", got)
	}
	if got := types(f.apply(&good)); got != events.DecCarAdded {
		t.Fatalf("the corrected event gave %s, want it accepted", got)
	}
	same := good
	same.URLs = []string{"https://mirror.example/1.car"}
	if b := f.apply(&same); types(b) != events.DecInputIgnored || b.Decisions[0].Reason != events.ReasonDuplicate {
		t.Fatalf("same copy from another URL gave %+v", b.Decisions)
	}
	upper := good
	upper.MD5 = strings.ToUpper(good.MD5)
	if b := f.apply(&upper); b.Decisions[0].Reason != events.ReasonDuplicate {
		t.Fatalf("the md5 in upper case gave %+v", b.Decisions)
	}
	for _, mut := range []func(*events.CarReplicated){
		func(e *events.CarReplicated) { e.Size, e.Piece = 1001, "" },
		func(e *events.CarReplicated) { e.MD5 = "ffffffffffffffffffffffffffffffff" },
	} {
		other := good
		mut(&other)
		if b := f.apply(&other); types(b) != events.DecInputIgnored || b.Decisions[0].Reason != events.ReasonConflict {
			t.Fatalf("a conflicting copy gave %+v", b.Decisions)
		}
	}
	// The conflict survives a rebuild: the print is on the log.
	st := rebuilt(t, f)
	if b := withoutSettings(st.Apply(f.seq+1, testutil.MustEncode(&events.CarReplicated{
		Car: good.Car, Size: good.Size, MD5: "ffffffffffffffffffffffffffffffff", URLs: good.URLs,
	}))); b.Decisions[0].Reason != events.ReasonConflict {
		t.Fatalf("after a rebuild a conflicting copy gave %+v", b.Decisions)
	}
}

// rebuilt is a state rebuilt from f's stored batches alone, as a restart
// rebuilds it, made with settings other than the log's.
func rebuilt(t *testing.T, f *folder) *State {
	t.Helper()
	st := New(events.Settings{DealSize: 1 << 30})
	for _, b := range f.log {
		data, err := events.EncodeBatch(nil, &b)
		if err != nil {
			t.Fatal(err)
		}
		var stored events.Batch
		if err := events.DecodeBatch(data, &stored); err != nil {
			t.Fatal(err)
		}
		if err := st.Replay(stored); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// Issue 15, finding 2: a tick dated 9999-12-31 closed the open aggregate
// and froze the clock; a tick from the past moved nothing silently.
func TestTicksAreBoundedByWhenTheLogStoredThem(t *testing.T) {
	cfg := testConfig()
	cfg.MaxTickAhead = 5 * time.Minute
	st := New(cfg)
	t0 := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	seq := uint64(0)
	tick := func(at, stored time.Time) events.Batch {
		seq++
		return withoutSettings(st.ApplyInput(Input{Seq: seq, Data: testutil.MustEncode(&events.Tick{Time: at}), Stored: stored}))
	}
	tick(t0, t0)
	seq++
	st.ApplyInput(Input{Seq: seq, Data: testutil.MustEncode(testutil.Replicated(1, 17000, true)), Stored: t0})
	forged := time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)
	if b := tick(forged, t0.Add(time.Second)); types(b) != events.DecInputIgnored || !strings.Contains(b.Decisions[0].Reason, "ahead of when the input log stored it") {
		t.Fatalf("a tick in 9999 gave %+v", b.Decisions)
	}
	if st.now != t0 {
		t.Fatalf("the clock moved to %s", st.now)
	}
	if b := tick(t0.Add(-time.Minute), t0.Add(2*time.Second)); types(b) != events.DecInputIgnored || !strings.Contains(b.Decisions[0].Reason, "before the fold's clock") {
		t.Fatalf("a tick back in time gave %+v", b.Decisions)
	}
	if b := tick(t0, t0.Add(3*time.Second)); len(b.Decisions) != 0 {
		t.Fatalf("a repeated tick gave %+v", b.Decisions)
	}
	// A tick within the bound after an outage of days moves the clock and
	// closes what waited long enough.
	later := t0.Add(72 * time.Hour)
	if b := tick(later.Add(time.Minute), later); types(b) != events.DecAggReady {
		t.Fatalf("a tick after an outage gave %s", types(b))
	}
}

// Issue 15, finding 9: the settings that decide the fold are the first
// decision of a log, and a state rebuilt from the log folds under them,
// whatever it was made with.
func TestTheFirstBatchRecordsTheSettings(t *testing.T) {
	cfg := testConfig()
	cfg.MaxTickAhead = time.Minute
	cfg.VerifyPieces = true
	st := New(cfg)
	b := st.Apply(1, testutil.MustEncode(testutil.Replicated(1, 1000, false)))
	if types(b) != events.DecLogSettings+","+events.DecCarQueued || !reflect.DeepEqual(*b.Decisions[0].Settings, cfg) {
		t.Fatalf("first batch %s %+v", types(b), b.Decisions[0].Settings)
	}
	if got := types(st.Apply(2, testutil.MustEncode(testutil.Replicated(2, 1000, false)))); got != events.DecCarQueued {
		t.Fatalf("second batch %s, want the settings once", got)
	}
	data, _ := json.Marshal(b)
	var stored events.Batch
	if err := events.DecodeBatch(data, &stored); err != nil {
		t.Fatal(err)
	}
	other := New(events.Settings{DealSize: 1 << 30})
	if err := other.Replay(stored); err != nil {
		t.Fatal(err)
	}
	if other.Settings() != cfg {
		t.Fatalf("rebuilt state folds under %+v, want the log's %+v", other.Settings(), cfg)
	}
	if got := types(other.Apply(3, testutil.MustEncode(testutil.Replicated(3, 1000, false)))); got != events.DecCarQueued {
		t.Fatalf("a rebuilt state recorded the settings again: %s", got)
	}
}

func TestReconcileRefusesOnlyGivenSettingsThatDisagree(t *testing.T) {
	log := &events.Settings{DealSize: 8 << 20, MinPayload: 100, MaxWait: time.Hour}
	want := events.Settings{DealSize: 32 << 30, MinPayload: 5, MaxWait: time.Hour}
	got, err := Reconcile(log, want, map[string]bool{"maxWait": true})
	if err != nil || got != *log {
		t.Fatalf("flags left out: %+v %v, want the log's", got, err)
	}
	_, err = Reconcile(log, want, map[string]bool{"dealSize": true})
	if err == nil || !strings.Contains(err.Error(), "dealSize 34359738368 (the log's: 8388608)") {
		t.Fatalf("a deal size that disagrees gave %v", err)
	}
	if got, err := Reconcile(nil, want, map[string]bool{"dealSize": true}); err != nil || got != want {
		t.Fatalf("a new log: %+v %v", got, err)
	}
}
