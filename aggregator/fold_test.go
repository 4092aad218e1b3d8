package aggregator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/piece"
	"github.com/filecoin-project/go-data-segment/datasegment"
	"github.com/filecoin-project/go-state-types/abi"
	"github.com/multiformats/go-multibase"
)

const testDeal = 64 << 10 // 64 KiB: 4 index entries, 256 bytes reserved

func testConfig() events.Settings {
	return events.Settings{DealSize: testDeal, MinPayload: 16 << 10, MaxWait: time.Minute}
}

// folder feeds inputs with increasing sequences.
type folder struct {
	t   *testing.T
	st  *State
	seq uint64
	log []events.Batch // every non-empty batch, as stored
}

func newFolder(t *testing.T) *folder { return &folder{t: t, st: New(testConfig())} }

func (f *folder) apply(ev events.Event) events.Batch {
	return f.raw(string(testutil.MustEncode(ev)))
}

func (f *folder) raw(data string) events.Batch {
	f.seq++
	b := f.st.Apply(f.seq, []byte(data))
	if len(b.Decisions) > 0 {
		f.log = append(f.log, b)
	}
	if f.seq > 1 {
		return b // a later log.settings is a settings.change's
	}
	return withoutSettings(b)
}

// withoutSettings drops the log.settings decision a log's first batch
// starts with (TestTheFirstBatchRecordsTheSettings), so that tests of
// other rules see only the decisions their input caused.
func withoutSettings(b events.Batch) events.Batch {
	if len(b.Decisions) > 0 && b.Decisions[0].Type == events.DecLogSettings {
		b.Decisions = b.Decisions[1:]
	}
	return b
}

func types(b events.Batch) string {
	var out []string
	for _, d := range b.Decisions {
		out = append(out, d.Type)
	}
	return strings.Join(out, ",")
}

func TestCarWithPieceJoinsTheIngestingAggregate(t *testing.T) {
	f := newFolder(t)
	b := f.apply(testutil.Replicated(1, 1000, true))
	if got, want := types(b), events.DecCarAdded; got != want {
		t.Fatalf("decisions = %s, want %s", got, want)
	}
	d := b.Decisions[0]
	if d.Aggregate != 1 || d.PieceSize != 1024 || d.Record == nil || d.Record.Size != 1000 {
		t.Fatalf("car.added = %+v", d)
	}
}

func TestCarWithoutPieceWaitsThenJoinsOnCarPiece(t *testing.T) {
	f := newFolder(t)
	e := testutil.Replicated(1, 1000, false)
	if got := types(f.apply(e)); got != events.DecCarQueued {
		t.Fatalf("decisions = %s, want car.queued", got)
	}
	p := testutil.FakePiece(1, 1000)
	b := f.apply(&events.CarPiece{Car: e.Car, Piece: p.V1().String(), PieceSize: p.Padded})
	if got := types(b); got != events.DecCarAdded {
		t.Fatalf("decisions = %s, want car.added", got)
	}
	if got, want := b.Decisions[0].Piece, p.MustV2().String(); got != want {
		t.Fatalf("piece = %s, want %s", got, want)
	}
	if got := types(f.apply(&events.CarPiece{Car: e.Car, Piece: p.V1().String(), PieceSize: p.Padded})); got != events.DecInputIgnored {
		t.Fatalf("second car.piece gave %s, want input.ignored", got)
	}
}

func TestDuplicatesChangeNothingAtAnyDistance(t *testing.T) {
	f := newFolder(t)
	f.apply(testutil.Replicated(1, 1000, true))
	for i := 2; i < 40; i++ {
		f.apply(testutil.Replicated(i, 1000, true))
	}
	before := f.st.Counts()
	b := f.apply(testutil.Replicated(1, 1000, true))
	if got := types(b); got != events.DecInputIgnored || !strings.Contains(b.Decisions[0].Reason, "duplicate") {
		t.Fatalf("duplicate gave %s %+v", got, b.Decisions)
	}
	// The same CAR spelled in base36 is the same CAR.
	e := testutil.Replicated(3, 1000, false)
	e.Car = testutil.CarCID(3).Encode(mustBase36())
	if got := types(f.apply(e)); got != events.DecInputIgnored {
		t.Fatalf("duplicate in another base gave %s", got)
	}
	if after := f.st.Counts(); after != before {
		t.Fatalf("counts changed: %+v → %+v", before, after)
	}
}

func TestBadInputsAreRejectedWithReasonsAndDoNotBlockGoodOnes(t *testing.T) {
	good := func() *events.CarReplicated { return testutil.Replicated(99, 1000, true) }
	cases := []struct {
		name   string
		mutate func(e *events.CarReplicated)
		reason string
	}{
		{"a CAR that is not a CID is rejected", func(e *events.CarReplicated) { e.Car = "nope" }, "car:"},
		{"a missing CAR is rejected", func(e *events.CarReplicated) { e.Car = "" }, "car: missing"},
		{"zero size is rejected", func(e *events.CarReplicated) { e.Size = 0; e.Piece = "" }, "size:"},
		{"a CAR too big for the deal is rejected", func(e *events.CarReplicated) { e.Size = testDeal; e.Piece = "" }, "larger than"},
		{"a short md5 is rejected", func(e *events.CarReplicated) { e.MD5 = "abc" }, "md5:"},
		{"a non-hex md5 is rejected", func(e *events.CarReplicated) { e.MD5 = strings.Repeat("z", 32) }, "md5: not hex"},
		{"no URLs is rejected", func(e *events.CarReplicated) { e.URLs = nil }, "urls:"},
		{"an ftp URL is rejected", func(e *events.CarReplicated) { e.URLs = []string{"ftp://x/y"} }, "not an http(s) URL"},
		{"a piece for another size is rejected", func(e *events.CarReplicated) { e.Size = 5000 }, "piece:"},
		{"a v1 piece without pieceSize is rejected", func(e *events.CarReplicated) {
			e.Piece = testutil.FakePiece(99, 1000).V1().String()
		}, "needs its padded size"},
		{"a v1 piece with a wrong pieceSize is rejected", func(e *events.CarReplicated) {
			e.Piece, e.PieceSize = testutil.FakePiece(99, 1000).V1().String(), 4096
		}, "does not match size"},
		{"a piece that is not a piece CID is rejected", func(e *events.CarReplicated) { e.Piece = testutil.CarCID(1).String() }, "not a piece CID"},
		{"a bad replicatedAt is rejected", func(e *events.CarReplicated) { e.ReplicatedAt = "yesterday" }, "replicatedAt"},
		{"a size whose padding overflows is rejected, not a crash", func(e *events.CarReplicated) {
			e.Size, e.Piece, e.PieceSize = 1<<64-1, testutil.FakePiece(99, 100).V1().String(), 128
		}, "size:"},
		{"a source over the limit as stored is rejected", func(e *events.CarReplicated) {
			e.Source = json.RawMessage(`{"note":"` + strings.Repeat("<", 1500) + `"}`) // escapes to 6 bytes each
		}, "source:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFolder(t)
			e := good()
			tc.mutate(e)
			b := f.apply(e)
			if got := types(b); got != events.DecCarRejected {
				t.Fatalf("decisions = %s, want car.rejected", got)
			}
			if r := b.Decisions[0].Reason; !strings.Contains(r, tc.reason) {
				t.Fatalf("reason %q does not mention %q", r, tc.reason)
			}
			if got := types(f.apply(good())); got != events.DecCarAdded {
				t.Fatalf("good event after a bad one gave %s", got)
			}
		})
	}
}

func TestMalformedInputsAreRecorded(t *testing.T) {
	cases := []struct{ name, data, want, reason string }{
		{"garbage is ignored with a reason", `{{{`, events.DecInputIgnored, "not a JSON"},
		{"an unknown type is ignored with a reason", `{"type":"car.exploded","version":1}`, events.DecInputIgnored, "unknown event type"},
		{"a future version is rejected", `{"type":"car.replicated","version":2,"car":"x"}`, events.DecCarRejected, "unsupported version"},
		{"a size of the wrong type is rejected under its CAR", `{"type":"car.replicated","version":1,"car":"bagx","size":"big"}`, events.DecCarRejected, "car.replicated"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newFolder(t).raw(tc.data)
			if got := types(b); got != tc.want || !strings.Contains(b.Decisions[0].Reason, tc.reason) {
				t.Fatalf("got %s %+v, want %s mentioning %q", got, b.Decisions, tc.want, tc.reason)
			}
		})
	}
}

// dataSegmentPiece builds the aggregate independently with go-data-segment
// from pieces sorted largest first (stable), the layout DESIGN.md fixes.
func dataSegmentPiece(t *testing.T, deal uint64, pieces []piece.Commitment) string {
	t.Helper()
	sorted := slices.Clone(pieces)
	slices.SortStableFunc(sorted, func(a, b piece.Commitment) int { return int(b.Padded>>7) - int(a.Padded>>7) })
	infos := make([]abi.PieceInfo, len(sorted))
	for i, p := range sorted {
		infos[i] = abi.PieceInfo{Size: abi.PaddedPieceSize(p.Padded), PieceCID: p.V1()}
	}
	agg, err := datasegment.NewAggregate(abi.PaddedPieceSize(deal), infos)
	if err != nil {
		t.Fatal(err)
	}
	c, err := agg.PieceCID()
	if err != nil {
		t.Fatal(err)
	}
	return c.String()
}

func TestAggregateClosesWhenTheNextPieceDoesNotFit(t *testing.T) {
	f := newFolder(t)
	// 64 KiB deal, 256 bytes of index: 16+8+16 KiB fit (40), a 32 KiB does not.
	sizes := []uint64{16000, 8000, 16000, 30000}
	var pieces []piece.Commitment
	var last events.Batch
	for i, s := range sizes {
		last = f.apply(testutil.Replicated(i, s, true))
		pieces = append(pieces, testutil.FakePiece(i, s))
	}
	if got, want := types(last), events.DecAggReady+","+events.DecCarAdded; got != want {
		t.Fatalf("decisions = %s, want %s", got, want)
	}
	ready := last.Decisions[0]
	if ready.Aggregate != 1 || ready.Count != 3 || ready.Closed != events.ClosedFull || ready.Payload != 40000 {
		t.Fatalf("ready = %+v", ready)
	}
	if got, want := ready.PieceV1, dataSegmentPiece(t, testDeal, pieces[:3]); got != want {
		t.Fatalf("aggregate piece %s, go-data-segment says %s", got, want)
	}
	if got := last.Decisions[1].Aggregate; got != 2 {
		t.Fatalf("next CAR went to aggregate %d, want 2", got)
	}
}

func TestAggregateClosesAtTheEntryLimit(t *testing.T) {
	f := newFolder(t) // MaxIndexEntriesInDeal(64 KiB) = 4
	var last events.Batch
	for i := range 5 {
		last = f.apply(testutil.Replicated(i, 100, true))
	}
	if got := types(last); got != events.DecAggReady+","+events.DecCarAdded || last.Decisions[0].Count != 4 {
		t.Fatalf("fifth CAR gave %s %+v", got, last.Decisions)
	}
}

func TestMaxWaitClosesOnlyWithMinPayload(t *testing.T) {
	f := newFolder(t)
	t0 := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	f.apply(&events.Tick{Time: t0})
	f.apply(testutil.Replicated(1, 8000, true))
	if got := types(f.apply(&events.Tick{Time: t0.Add(2 * time.Minute)})); got != "" {
		t.Fatalf("tick below min payload gave %q", got)
	}
	f.apply(testutil.Replicated(2, 9000, true)) // 17000 ≥ 16 KiB
	if got := types(f.apply(&events.Tick{Time: t0.Add(2*time.Minute + time.Second)})); got != events.DecAggReady {
		t.Fatalf("tick after max-wait with min payload gave %q", got)
	}
	if b := f.apply(&events.Tick{Time: t0}); types(b) != events.DecInputIgnored || !strings.Contains(b.Decisions[0].Reason, "before the fold's clock") {
		t.Fatalf("a tick back in time gave %+v, want it ignored with the reason", b.Decisions)
	}
}

func TestWaitStartsAtFirstTickWhenNoTimeWasKnown(t *testing.T) {
	f := newFolder(t)
	f.apply(testutil.Replicated(1, 17000, true))
	t0 := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	if got := types(f.apply(&events.Tick{Time: t0})); got != events.DecAggClock {
		t.Fatalf("first tick gave %q, want aggregate.clock", got)
	}
	if got := types(f.apply(&events.Tick{Time: t0.Add(30 * time.Second)})); got != "" {
		t.Fatalf("tick before max-wait gave %q", got)
	}
	if got := types(f.apply(&events.Tick{Time: t0.Add(time.Minute)})); got != events.DecAggReady {
		t.Fatalf("tick at max-wait gave %q", got)
	}
}

func TestOperatorForceClose(t *testing.T) {
	f := newFolder(t)
	f.apply(testutil.Replicated(1, 100, true))
	if got := types(f.apply(&events.AggregateClose{Aggregate: 2})); got != events.DecInputIgnored {
		t.Fatalf("closing a non-ingesting aggregate gave %s", got)
	}
	b := f.apply(&events.AggregateClose{Aggregate: 1, By: "test"})
	if got := types(b); got != events.DecAggReady || b.Decisions[0].Closed != events.ClosedForced {
		t.Fatalf("force close gave %s %+v", got, b.Decisions)
	}
}

func TestDealFlowAndFailureRequeuesInOriginalOrderAheadOfNewer(t *testing.T) {
	f := newFolder(t)
	for i := range 3 {
		f.apply(testutil.Replicated(i, 4000, true))
	}
	ready := f.apply(&events.AggregateClose{Aggregate: 1}).Decisions[0]
	if got := types(f.apply(&events.DealOffered{Aggregate: 1})); got != events.DecAggOffered {
		t.Fatalf("offered gave %s", got)
	}
	if got := types(f.apply(&events.DealOffered{Aggregate: 1})); got != events.DecInputIgnored {
		t.Fatalf("second offered gave %s", got)
	}
	f.apply(testutil.Replicated(10, 4000, true)) // newer CAR in aggregate 2
	b := f.apply(&events.DealReport{Aggregate: ready.Piece, Status: events.StatusFailed, Reason: "no provider"})
	if got, want := types(b), events.DecAggFailed+","+events.DecCarsRequeued; got != want {
		t.Fatalf("failure gave %s, want %s", got, want)
	}
	rq := b.Decisions[1]
	if rq.From != 1 || rq.First != 0 || rq.Count != 3 || rq.Aggregate != 2 {
		t.Fatalf("requeue = %+v", rq)
	}
	// A second failure report for the same aggregate changes nothing.
	if got := types(f.apply(&events.DealReport{Aggregate: "1", Status: events.StatusFailed})); got != events.DecInputIgnored {
		t.Fatalf("repeated failure gave %s", got)
	}
	ready2 := f.apply(&events.AggregateClose{Aggregate: 2}).Decisions[0]
	if ready2.Count != 4 {
		t.Fatalf("aggregate 2 holds %d CARs, want 4", ready2.Count)
	}
	deals := []events.Deal{{Provider: "f01000", DealID: 7}}
	if got := types(f.apply(&events.DealReport{Aggregate: ready2.PieceV1, Status: events.StatusPublished, Deals: deals})); got != events.DecAggDeals {
		t.Fatalf("deals gave %s", got)
	}
	if got := types(f.apply(&events.DealReport{Aggregate: "2", Status: events.StatusActive, Deals: deals})); got != events.DecInputIgnored {
		t.Fatalf("known deals gave %s", got)
	}
	more := append(deals, events.Deal{Provider: "f01001", DealID: 8})
	b = f.apply(&events.DealReport{Aggregate: "2", Status: events.StatusActive, Deals: more})
	if got := types(b); got != events.DecAggDeals || len(b.Decisions[0].Deals) != 1 || b.Decisions[0].Deals[0].DealID != 8 {
		t.Fatalf("a replica deal gave %s %+v", got, b.Decisions)
	}
	if got := types(f.apply(&events.DealReport{Aggregate: "2", Status: events.StatusFailed, Reason: "late"})); got != events.DecInputIgnored {
		t.Fatalf("failure after deals gave %s", got)
	}
	if got := types(f.apply(&events.DealReport{Aggregate: "77", Status: events.StatusPublished, Deals: deals})); got != events.DecInputIgnored {
		t.Fatalf("unknown aggregate gave %s", got)
	}
}

// randomLog is a log of mixed inputs: CARs with and without pieces, pieces,
// duplicates, garbage, ticks, closes and deal news.
func randomLog(seed uint64, n int) [][]byte {
	r := rand.New(rand.NewPCG(seed, 1))
	t0 := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	var log [][]byte
	var queued []*events.CarReplicated
	for i := 0; i < n; i++ {
		var ev events.Event
		switch k := r.IntN(20); {
		case k < 10:
			e := testutil.Replicated(i, 1+r.Uint64N(20000), r.IntN(3) > 0)
			if e.Piece == "" {
				queued = append(queued, e)
			}
			ev = e
		case k < 13 && len(queued) > 0:
			e := queued[0]
			queued = queued[1:]
			p := testutil.FakePiece(int(r.Uint64()), e.Size)
			ev = &events.CarPiece{Car: e.Car, Piece: p.MustV2().String()}
		case k < 14:
			ev = testutil.Replicated(r.IntN(i+1), 1+r.Uint64N(20000), true)
		case k < 15:
			log = append(log, []byte(`{"type":"car.replicated","version":1,"car":"junk"}`))
			continue
		case k < 17:
			ev = &events.Tick{Time: t0.Add(time.Duration(i) * 10 * time.Second)}
		case k < 18:
			ev = &events.AggregateClose{Aggregate: uint64(1 + r.IntN(i/4+1))}
		case k < 19:
			ev = &events.DealOffered{Aggregate: uint64(1 + r.IntN(i/4+1))}
		default:
			st := []string{events.StatusFailed, events.StatusPublished}[r.IntN(2)]
			ev = &events.DealReport{Aggregate: fmt.Sprint(1 + r.IntN(i/4+1)), Status: st, Reason: "x",
				Deals: []events.Deal{{Provider: "f01000", DealID: r.Uint64N(5)}}}
		}
		log = append(log, testutil.MustEncode(ev))
	}
	return log
}

func foldLog(cfg events.Settings, log [][]byte) ([]byte, []events.Batch) {
	st := New(cfg)
	var out bytes.Buffer
	var batches []events.Batch
	for i, in := range log {
		b := st.Apply(uint64(i+1), in)
		if len(b.Decisions) == 0 {
			continue
		}
		data, _ := json.Marshal(b)
		out.Write(data)
		out.WriteByte('\n')
		batches = append(batches, b)
	}
	return out.Bytes(), batches
}

func TestTheSameInputLogGivesTheSameAggregateLogByteForByte(t *testing.T) {
	log := randomLog(7, 3000)
	a, batches := foldLog(testConfig(), log)
	b, _ := foldLog(testConfig(), log)
	if !bytes.Equal(a, b) {
		t.Fatal("two folds of one input log differ")
	}
	kinds := map[string]int{}
	for _, b := range batches {
		for _, d := range b.Decisions {
			kinds[d.Type]++
		}
	}
	for _, k := range []string{events.DecCarAdded, events.DecCarQueued, events.DecCarRejected, events.DecAggReady, events.DecAggOffered, events.DecAggFailed, events.DecCarsRequeued, events.DecAggDeals, events.DecInputIgnored} {
		if kinds[k] == 0 {
			t.Errorf("the random log never produced %s; the test covers too little", k)
		}
	}
}

func TestRebuiltStateContinuesExactlyLikeTheOriginal(t *testing.T) {
	log := randomLog(11, 2000)
	want, _ := foldLog(testConfig(), log)
	for _, cut := range []int{1, 137, 1000, 1999} {
		// Fold up to cut, rebuild a fresh state from the stored batches,
		// then continue from the batch's input as a restarted runner does.
		_, batches := foldLog(testConfig(), log[:cut])
		st := New(testConfig())
		var out bytes.Buffer
		for _, b := range batches {
			if err := st.Replay(b); err != nil {
				t.Fatalf("cut %d: replay: %v", cut, err)
			}
			data, _ := json.Marshal(b)
			out.Write(data)
			out.WriteByte('\n')
		}
		for i := int(st.LastIn()); i < len(log); i++ {
			b := st.Apply(uint64(i+1), log[i])
			if len(b.Decisions) == 0 {
				continue
			}
			data, _ := json.Marshal(b)
			out.Write(data)
			out.WriteByte('\n')
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("cut %d: restarted fold differs from the continuous one", cut)
		}
	}
}

func TestEveryAcceptedCarEndsInExactlyOneState(t *testing.T) {
	_, batches := foldLog(testConfig(), randomLog(3, 3000))
	m := NewInvariantModel()
	for _, b := range batches {
		if err := m.Apply(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Check(testDeal); err != nil {
		t.Fatal(err)
	}
	if m.Cars() == 0 {
		t.Fatal("no CARs in the model")
	}
}

func mustBase36() multibase.Encoder {
	enc, err := multibase.NewEncoder(multibase.Base36)
	if err != nil {
		panic(err)
	}
	return enc
}

func TestABadCopyOfAnAcceptedCarsEventDoesNotUndoIt(t *testing.T) {
	f := newFolder(t)
	e := testutil.Replicated(1, 1000, false)
	f.apply(e)
	bad := *e
	bad.MD5 = "short"
	b := f.apply(&bad)
	if got := types(b); got != events.DecInputIgnored || !strings.Contains(b.Decisions[0].Reason, "md5") {
		t.Fatalf("bad copy gave %s %+v", got, b.Decisions)
	}
	if f.st.Counts().Queued != 1 {
		t.Fatal("the queued CAR was dropped")
	}
}

func TestAnUndecodableCopyOfAnAcceptedCarsEventDoesNotUndoIt(t *testing.T) {
	f := newFolder(t)
	e := testutil.Replicated(1, 1000, false)
	f.apply(e)
	b := f.raw(`{"type":"car.replicated","version":1,"car":"` + e.Car + `","size":"10"}`)
	if got := types(b); got != events.DecInputIgnored {
		t.Fatalf("undecodable copy gave %s %+v", got, b.Decisions)
	}
	if f.st.Counts().Queued != 1 {
		t.Fatal("the queued CAR was dropped")
	}
}

func TestARejectionIsRecordedUnderTheCanonicalCID(t *testing.T) {
	f := newFolder(t)
	e := testutil.Replicated(1, 1000, false)
	e.Car = testutil.CarCID(1).Encode(mustBase36())
	e.MD5 = "x"
	b := f.apply(e)
	if got := b.Decisions[0].Car; got != testutil.CarCID(1).String() {
		t.Fatalf("rejected under %q, want the canonical %q", got, testutil.CarCID(1).String())
	}
}

func TestAggregateWaitSurvivesARebuildAfterTicksThatDecidedNothing(t *testing.T) {
	// A tick that decides nothing stores no batch; the aggregate opened
	// after it must remember that tick's time, not an older one, once the
	// state is rebuilt from the stored batches.
	t0 := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	log := [][]byte{
		testutil.MustEncode(&events.AggregateClose{Aggregate: 9}), // stores a batch at t=0
		testutil.MustEncode(&events.Tick{Time: t0}),
		testutil.MustEncode(&events.Tick{Time: t0.Add(50 * time.Second)}),
		testutil.MustEncode(testutil.Replicated(1, 17000, true)),
		testutil.MustEncode(&events.Tick{Time: t0.Add(70 * time.Second)}),
	}
	want, _ := foldLog(testConfig(), log)
	_, batches := foldLog(testConfig(), log[:4])
	st := New(testConfig())
	for _, b := range batches {
		if err := st.Replay(b); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	for _, b := range batches {
		data, _ := json.Marshal(b)
		out.Write(data)
		out.WriteByte('\n')
	}
	if b := st.Apply(5, log[4]); len(b.Decisions) > 0 {
		data, _ := json.Marshal(b)
		out.Write(data)
		out.WriteByte('\n')
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("rebuilt fold closed differently:\n%s\nwant\n%s", out.Bytes(), want)
	}
}

func TestACarPieceThatCannotBeTheCarsIsIgnoredAndTheCarWaits(t *testing.T) {
	f := newFolder(t)
	e := testutil.Replicated(1, 1000, false)
	f.apply(e)
	wrong := testutil.FakePiece(1, 50000).MustV2().String()
	b := f.apply(&events.CarPiece{Car: e.Car, Piece: wrong})
	if got := types(b); got != events.DecInputIgnored || !strings.Contains(b.Decisions[0].Reason, "car.piece: piece:") {
		t.Fatalf("inconsistent car.piece gave %s %+v", got, b.Decisions)
	}
	if got := types(f.apply(&events.CarPiece{Car: e.Car, Piece: testutil.FakePiece(1, 1000).MustV2().String()})); got != events.DecCarAdded {
		t.Fatalf("the right piece afterwards gave %s", got)
	}
}
