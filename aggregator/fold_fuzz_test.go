package aggregator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/internal/mutate"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/multiformats/go-multibase"
)

// fuzzFoldConfig is a tiny deal (4 KiB: at most 4 pieces, 2032-byte CARs)
// so that few inputs open, fill, close, fail and requeue aggregates, and a
// deal clock short enough for a few ticks to time out, back off and give
// up.
func fuzzFoldConfig(verify bool) events.Settings {
	return events.Settings{DealSize: 4 << 10, MinPayload: 1, MaxWait: time.Minute, VerifyPieces: verify,
		DealTimeout: 2 * time.Minute, MaxOffers: 3, OfferBackoff: 30 * time.Second}
}

// maxFuzzInputs bounds the inputs of one fuzz case (restarts are checked
// after every batch, so the work is quadratic).
const maxFuzzInputs = 32

// foldWatchdog bounds one fuzz case; a healthy one takes milliseconds.
const foldWatchdog = 10 * time.Second

// FuzzFold applies arbitrary input bytes — one input per line — to the
// fold and holds it to DESIGN.md's rules:
//
//   - Apply never panics, whatever the input;
//   - the fold is deterministic: the same inputs give the same batches,
//     byte for byte;
//   - the batches, stored as JSON, pass the invariant model (every CAR in
//     one state, none in two live aggregates, aggregates fit the deal);
//   - a restart — Replay of the stored log into a fresh state, then the
//     inputs after its last "in" again — decides exactly what the
//     uninterrupted fold decided (here after the whole log; FuzzFoldOps
//     also restarts after each quarter of it).
//
// Seed corpus: testdata/fuzz/FuzzFold (FERRY_WRITE_FUZZ_SEEDS=1
// regenerates it).
func FuzzFold(f *testing.F) {
	f.Add([]byte(`{}`), false)
	writeFoldSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, verify bool) {
		inputs := bytes.Split(data, []byte("\n"))
		if len(inputs) > maxFuzzInputs {
			inputs = inputs[:maxFuzzInputs]
		}
		checkFold(t, fuzzFoldConfig(verify), inputs, data, 1)
	})
}

// FuzzFoldOps is FuzzFold on well-formed inputs: every three bytes are one
// operation — a CAR replicated with or without its piece (from one of
// three spaces, or none), a computed or wrong piece, an invalid CAR, time
// passing, a forced close, an offer, a failed offer, deals, a failed deal,
// an operator's reoffer or fail, a settings.change of the grouping — over
// a few CARs and aggregates, folded grouped by space, so the fuzzer spends
// its time in the fold's states rather than in JSON syntax. The same rules
// hold.
func FuzzFoldOps(f *testing.F) {
	f.Add([]byte{0, 1, 0, 0, 2, 0, 0, 3, 0, 0, 4, 0, 0, 5, 0, 6, 0, 0, 10, 0, 1, 8, 0, 0, 4, 0, 255}, false)
	f.Add([]byte{1, 1, 0, 1, 2, 0, 2, 1, 1, 2, 2, 0, 3, 1, 0, 5, 0, 0, 9, 0, 0, 4, 0, 100}, true)
	f.Fuzz(func(t *testing.T, ops []byte, verify bool) {
		cfg := fuzzFoldConfig(verify)
		cfg.GroupBy, cfg.GroupMaxWait = "source.space", 90*time.Second
		checkFold(t, cfg, opInputs(ops), ops, 4)
	})
}

// opSizes are the CAR sizes of the operations: tiny, at the padding
// steps, the largest a 4 KiB deal takes, and one too large.
var opSizes = []uint64{1, 127, 128, 500, 1016, 1017, 2032, 2033}

// opBase36 spells a CID another way than the default base32.
var opBase36, _ = multibase.NewEncoder(multibase.Base36)

// opInputs turns operation bytes into encoded inputs.
func opInputs(ops []byte) [][]byte {
	var inputs [][]byte
	clock := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	for i := 0; i+2 < len(ops) && len(inputs) < maxFuzzInputs; i += 3 {
		kind, a, b := ops[i]%12, int(ops[i+1]), ops[i+2]
		n := a % 12                        // the CAR
		size := opSizes[n%len(opSizes)]    // each CAR has one size
		id := uint64(a%6 + 1)              // the aggregate
		car := testutil.CarCID(n).String() // its CID
		var ev events.Event
		switch kind {
		case 0, 1:
			e := testutil.Replicated(n, size, kind == 0 && size <= 2032)
			if b%5 == 4 {
				e.Car = testutil.CarCID(n).Encode(opBase36) // another spelling
			}
			if space := b % 4; space > 0 {
				e.Source = json.RawMessage(fmt.Sprintf(`{"space":"s%d","account":"a%d"}`, space, space%2))
			}
			ev = e
		case 2:
			p := testutil.FakePiece(n, size)
			if b%4 == 3 {
				p = testutil.FakePiece(n+100, size) // another piece of the same size
			}
			if p.Padded > 2048 {
				p.Padded, p.Payload = 2048, 2032
			}
			ev = &events.CarPiece{Car: car, Piece: p.MustV2().String()}
		case 3:
			ev = &events.CarInvalid{Car: car, Reason: "bad bytes"}
		case 4:
			clock = clock.Add(time.Duration(b) * time.Second)
			ev = &events.Tick{Time: clock}
		case 5:
			ev = &events.AggregateClose{Aggregate: id, By: "fuzz"}
		case 6:
			ev = &events.DealOffered{Aggregate: id}
		case 7:
			ev = &events.OfferFailed{Aggregate: id, Reason: "engine down"}
		case 8, 9:
			ev = &events.DealReport{Aggregate: fmt.Sprint(id), Status: events.StatusActive,
				Deals: []events.Deal{{Provider: "f01000", DealID: uint64(b%3 + 1)}}}
		case 10:
			switch b % 4 {
			case 0:
				ev = &events.AggregateReoffer{Aggregate: id, By: "fuzz"}
			case 1:
				ev = &events.AggregateFail{Aggregate: id, By: "fuzz"}
			default:
				ev = &events.DealReport{Aggregate: fmt.Sprint(id), Status: events.StatusFailed, Reason: "simulated failure"}
			}
		case 11:
			ch := &events.SettingsChange{By: fmt.Sprint("fuzz ", i)}
			switch b % 4 {
			case 0:
				ch.GroupBy = &[]string{"none", "source.space", "source.account"}[a%3]
			case 1:
				w := time.Duration(a) * time.Second
				ch.GroupMaxWait = &w
			case 2:
				p := uint64(a) * 16
				ch.MinPayload = &p
			default:
				w := time.Duration(a) * time.Second
				ch.MaxWait = &w
			}
			ev = ch
		}
		inputs = append(inputs, testutil.MustEncode(ev))
	}
	return inputs
}

// checkFold holds the fold to the rules of FuzzFold on inputs, restarting
// it at parts+1 points of the log: a fresh fold of everything (which is
// the determinism check), and after every parts-th of the batches.
func checkFold(t *testing.T, cfg events.Settings, inputs [][]byte, data []byte, parts int) {
	// A fold that loops would hang ferry; a panic here makes the fuzzer
	// save the input instead of stalling.
	watchdog := time.AfterFunc(foldWatchdog, func() {
		panic(fmt.Sprintf("one fuzz case ran over %s (verify %v): %q", foldWatchdog, cfg.VerifyPieces, data))
	})
	defer watchdog.Stop()
	outs, logs := foldAll(t, cfg, inputs)
	m := NewInvariantModel()
	for _, js := range logs {
		if err := m.Apply(unmarshalBatch(t, js)); err != nil {
			t.Fatalf("the model refuses batch %s: %v", js, err)
		}
	}
	if err := m.Check(cfg.DealSize); err != nil {
		t.Fatalf("invariants broken: %v", err)
	}
	for _, k := range cuts(len(logs), parts) {
		r := New(cfg)
		for _, js := range logs[:k] {
			if err := r.Replay(unmarshalBatch(t, js)); err != nil {
				t.Fatalf("restart after %d batches: replay of %s: %v", k, js, err)
			}
		}
		for i := int(r.LastIn()); i < len(inputs); i++ {
			got := batchJSON(t, r.Apply(uint64(i+1), inputs[i]))
			if !bytes.Equal(got, outs[i]) {
				if k == 0 {
					t.Fatalf("the fold is not deterministic: input %d decides\n%s\nthen\n%s", i+1, got, outs[i])
				}
				t.Fatalf("restart after %d batches: input %d decides\n%s\nnot\n%s", k, i+1, got, outs[i])
			}
		}
	}
}

// cuts are the restart points checked: after 0, 1/parts, 2/parts … and
// all of n stored batches (after every batch would make the fuzzer too
// slow to get anywhere).
func cuts(n, parts int) []int {
	var out []int
	for j := 0; j <= parts; j++ {
		if k := n * j / parts; len(out) == 0 || out[len(out)-1] != k {
			out = append(out, k)
		}
	}
	return out
}

// foldAll applies inputs at sequences 1, 2, … and returns each input's
// batch as JSON (nil when it decided nothing) and the stored log.
func foldAll(t *testing.T, cfg events.Settings, inputs [][]byte) (outs, logs [][]byte) {
	s := New(cfg)
	outs = make([][]byte, len(inputs))
	for i, in := range inputs {
		b := s.Apply(uint64(i+1), in)
		if b.In != uint64(i+1) {
			t.Fatalf("input %d: batch names input %d", i+1, b.In)
		}
		outs[i] = batchJSON(t, b)
		if outs[i] != nil {
			logs = append(logs, outs[i])
		}
	}
	return outs, logs
}

func batchJSON(t *testing.T, b events.Batch) []byte {
	if len(b.Decisions) == 0 {
		return nil
	}
	js, err := json.Marshal(b)
	if err != nil {
		t.Fatalf("batch does not marshal: %v", err)
	}
	return js
}

func unmarshalBatch(t *testing.T, js []byte) events.Batch {
	var b events.Batch
	if err := json.Unmarshal(js, &b); err != nil {
		t.Fatalf("stored batch does not unmarshal: %v\n%s", err, js)
	}
	return b
}

// foldSeeds are input logs that take the fold through every path: pieces
// given and computed, verification, full, forced and max-wait closes,
// offers, deals by id and by piece CID, failures and requeues, duplicates,
// and inputs that are not events.
func foldSeeds() (seeds [][]byte, verify []bool) {
	enc := func(evs ...events.Event) [][]byte {
		var out [][]byte
		for _, ev := range evs {
			out = append(out, testutil.MustEncode(ev))
		}
		return out
	}
	tick := func(sec int) events.Event {
		return &events.Tick{Time: time.Date(2026, 11, 22, 12, 0, sec, 0, time.UTC)}
	}
	deal := func(agg string, id uint64) events.Event {
		return &events.DealReport{Aggregate: agg, Status: events.StatusActive, Deals: []events.Deal{{Provider: "f01000", DealID: id}}}
	}
	failed := func(agg string) events.Event {
		return &events.DealReport{Aggregate: agg, Status: events.StatusFailed, Reason: "simulated failure"}
	}
	add := func(lines [][]byte, v bool) {
		seeds = append(seeds, bytes.Join(lines, []byte("\n")))
		verify = append(verify, v)
	}
	// Pieces given: three aggregates fill; one gets deals, one fails and
	// requeues, one is closed by an operator; max-wait closes the rest.
	var lines [][]byte
	lines = append(lines, enc(tick(0))...)
	for i, size := range []uint64{1000, 2000, 500, 100, 1500, 2032, 700, 300, 1200} {
		lines = append(lines, enc(testutil.Replicated(i+1, size, true))...)
	}
	lines = append(lines, enc(
		&events.DealOffered{Aggregate: 1}, deal("1", 10), deal("1", 10),
		failed("2"), tick(30), &events.AggregateClose{Aggregate: 4, By: "op"}, &events.AggregateClose{Aggregate: 3},
		testutil.Replicated(1, 1000, true), tick(200), &events.OfferFailed{Aggregate: 3, Reason: "engine down"},
		failed("3"), deal("2", 11), tick(400))...)
	add(lines, false)
	// Reports by piece CID: fold once to learn the aggregates' pieces.
	base := append([][]byte(nil), lines[:11]...)
	st := New(fuzzFoldConfig(false))
	var pieces []string
	for i, in := range base {
		for _, d := range st.Apply(uint64(i+1), in).Decisions {
			if d.Type == events.DecAggReady {
				pieces = append(pieces, d.Piece, d.PieceV1)
			}
		}
	}
	byPiece := append([][]byte(nil), base...)
	for j := 0; 2*j+1 < len(pieces); j++ {
		switch j % 3 {
		case 0:
			byPiece = append(byPiece, enc(deal(pieces[2*j], uint64(20+j)))...) // v2
		case 1:
			byPiece = append(byPiece, enc(failed(pieces[2*j+1]))...) // v1
		default:
			byPiece = append(byPiece, enc(deal(pieces[2*j+1], uint64(20+j)))...)
		}
	}
	add(byPiece, false)
	// Pieces computed by workers: queued, piece, invalid, late and wrong
	// pieces, duplicates.
	lines = enc(tick(1))
	for i := 1; i <= 5; i++ {
		lines = append(lines, enc(testutil.Replicated(100+i, uint64(400*i), false))...)
	}
	for i := 1; i <= 5; i++ {
		car := testutil.CarCID(100 + i).String()
		switch i {
		case 3:
			lines = append(lines, enc(&events.CarInvalid{Car: car, Reason: "md5 mismatch"})...)
		case 4:
			lines = append(lines, enc(&events.CarPiece{Car: car, Piece: testutil.FakePiece(104, 999).MustV2().String()})...)
		default:
			lines = append(lines, enc(&events.CarPiece{Car: car, Piece: testutil.FakePiece(100+i, uint64(400*i)).MustV2().String()})...)
		}
	}
	lines = append(lines, enc(testutil.Replicated(103, 1200, false), tick(100), &events.CarPiece{Car: testutil.CarCID(101).String(), Piece: testutil.FakePiece(101, 400).MustV2().String()})...)
	add(lines, false)
	// Verified pieces: a claimed piece confirmed, one contradicted.
	good, bad := testutil.Replicated(201, 800, true), testutil.Replicated(202, 900, true)
	lines = enc(good, bad,
		&events.CarPiece{Car: good.Car, Piece: good.Piece},
		&events.CarPiece{Car: bad.Car, Piece: testutil.FakePiece(999, 900).MustV2().String()},
		tick(5), tick(100))
	add(lines, true)
	// Not events, or events of the wrong shape.
	add([][]byte{
		[]byte(`not json`), []byte(`{"type":"car.replicated","version":1,"car":7}`),
		[]byte(`{"type":"car.replicated","version":2,"car":"x"}`), []byte(`{"type":"tick","version":1,"time":"yesterday"}`),
		[]byte(`{"type":"deal.report","version":1,"aggregate":"1","status":"active","deals":[{"provider":"f01000","dealId":1}]}`),
		[]byte(`{"type":"aggregate.close","version":1,"aggregate":18446744073709551615}`), []byte(``),
	}, false)
	return seeds, verify
}

func writeFoldSeeds(tb testing.TB) {
	seeds, verify := foldSeeds()
	write := func(name string, seeds [][]byte, verify []bool) {
		flags := make([]any, len(verify))
		for i, v := range verify {
			flags[i] = v
		}
		mutate.WriteSeeds(tb, name, seeds, flags)
	}
	write("FuzzFold", seeds, verify)
	// Operations: fill and close by size, force a close, fail and requeue,
	// wait out max-wait, and verified pieces.
	write("FuzzFoldOps", [][]byte{
		{0, 6, 0, 0, 6, 0, 0, 5, 0, 4, 0, 1, 6, 0, 0, 10, 0, 0, 0, 7, 0, 4, 0, 61},
		{1, 0, 0, 1, 1, 0, 1, 2, 0, 2, 0, 0, 2, 1, 3, 3, 2, 0, 2, 2, 0, 5, 0, 0, 8, 0, 1, 9, 0, 1},
		{0, 1, 0, 0, 3, 0, 4, 0, 10, 0, 4, 4, 0, 8, 0, 4, 0, 70, 6, 0, 0, 7, 0, 0, 10, 0, 0, 4, 0, 70},
		{0, 1, 0, 2, 1, 0, 0, 2, 0, 2, 2, 3, 0, 3, 0, 5, 0, 0},
	}, []bool{false, false, false, true})
}
