package aggregator

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
)

// The golden log pins the fold's output to bytes committed in the
// repository: testdata/golden/inputs.jsonl is an input log (every input's
// sequence, stored time and bytes) and batches.jsonl the aggregate log the
// fold made of it when it was written. A change that makes the same
// history fold differently fails here; if the change is meant, the log
// format or a rule changed, and docs/events.md must say how.
//
// testdata/golden-grouped is the same history with tenants: CARs from
// five spaces (and none), folded grouped by space, with settings.change
// orders among the operator's.
//
//	go test ./aggregator -run 'TestTheGolden' -update-golden
//
// rewrites the files from goldenHistory.
var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/golden* from goldenHistory")

// golden is one committed history: where it lives, the settings it
// starts under, and whether its CARs belong to tenants.
type golden struct {
	dir     string
	cfg     events.Settings
	grouped bool
}

var (
	goldenPlain   = golden{"testdata/golden", goldenConfig(), false}
	goldenGrouped = golden{"testdata/golden-grouped", groupedGoldenConfig(), true}
)

// goldenConfig is the fuzz tests' tiny deal with every rule of the deal
// clock and the tick bound switched on.
func goldenConfig() events.Settings {
	cfg := fuzzFoldConfig(false)
	cfg.MaxTickAhead = 5 * time.Minute
	return cfg
}

func groupedGoldenConfig() events.Settings {
	cfg := goldenConfig()
	// A min payload most tenants' few CARs do not reach: their groups
	// are released into the pool.
	cfg.MinPayload, cfg.GroupBy, cfg.GroupMaxWait = 2500, "source.space", 2*time.Minute
	return cfg
}

// goldenInput is one line of inputs.jsonl.
type goldenInput struct {
	Seq    uint64    `json:"seq"`
	Stored time.Time `json:"stored"`
	Data   string    `json:"data"`
}

func TestTheGoldenInputLogFoldsToTheGoldenAggregateLog(t *testing.T) {
	checkGolden(t, goldenPlain, nil)
}

func TestTheGoldenGroupedInputLogFoldsToTheGoldenAggregateLog(t *testing.T) {
	checkGolden(t, goldenGrouped, []string{events.DecAggReleased, "log.settings mid-log", "group " + events.DecAggReady, "group " + events.DecCarsRequeued})
}

// checkGolden folds g's inputs, compares the batches with g's, and checks
// the log covers every kind of decision, and more.
func checkGolden(t *testing.T, g golden, more []string) {
	if *updateGolden {
		writeGolden(t, g)
	}
	inputs := readGoldenInputs(t, g.dir)
	want, err := os.ReadFile(filepath.Join(g.dir, "batches.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	got := foldGolden(t, g.cfg, inputs)
	if !bytes.Equal(got, want) {
		g, w := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		for i := range min(len(g), len(w)) {
			if g[i] != w[i] {
				t.Fatalf("batch %d of the golden log differs:\n got %s\nwant %s", i+1, g[i], w[i])
			}
		}
		t.Fatalf("the fold made %d batches, the golden log holds %d", len(g)-1, len(w)-1)
	}

	// The golden log is a log ferry could have written: the invariant
	// model takes it, it records its settings, and what it covers is
	// every kind of decision.
	m := NewInvariantModel()
	kinds := map[string]int{}
	var settings *events.Settings
	batches := 0
	for line := range bytes.Lines(want) {
		var b events.Batch
		if err := events.DecodeBatch(bytes.TrimSuffix(line, []byte("\n")), &b); err != nil {
			t.Fatal(err)
		}
		if batches++; batches == 1 && len(b.Decisions) > 0 {
			settings = b.Decisions[0].Settings
		}
		if err := m.Apply(b); err != nil {
			t.Fatalf("the model refuses golden batch %d: %v", b.In, err)
		}
		for _, d := range b.Decisions {
			kinds[d.Type]++
			if d.Group != "" {
				kinds["group "+d.Type]++
			}
			if d.Type == events.DecLogSettings && batches > 1 {
				kinds["log.settings mid-log"]++
			}
			if d.Type == events.DecInputIgnored {
				kinds[d.Type+" "+strings.SplitN(d.Reason, ":", 2)[0]]++
			}
		}
	}
	if err := m.Check(g.cfg.DealSize); err != nil {
		t.Fatal(err)
	}
	if settings == nil || *settings != g.cfg {
		t.Fatalf("the golden log starts with settings %+v, want %+v", settings, g.cfg)
	}
	for _, k := range append(more, events.DecCarQueued, events.DecCarAdded, events.DecCarRejected, events.DecInputIgnored, events.DecAggClock, events.DecAggReady,
		events.DecAggOffered, events.DecAggOfferFailed, events.DecAggDeals, events.DecAggFailed, events.DecAggRetry, events.DecCarsRequeued, events.DecLogSettings,
		"input.ignored duplicate", "input.ignored conflict") {
		if kinds[k] == 0 {
			t.Errorf("the golden log has no %s", k)
		}
	}
	t.Logf("%d inputs, %d batches: %v", len(inputs), batches, kinds)
}

// foldGolden folds inputs as the runner does and encodes each non-empty
// batch as the runner stores it, one per line.
func foldGolden(t *testing.T, cfg events.Settings, inputs []goldenInput) []byte {
	st := New(cfg)
	var out []byte
	for _, in := range inputs {
		b := st.ApplyInput(Input{Seq: in.Seq, Data: []byte(in.Data), Stored: in.Stored})
		if len(b.Decisions) == 0 {
			continue
		}
		var err error
		if out, err = events.EncodeBatch(out, &b); err != nil {
			t.Fatal(err)
		}
		out = append(out, '\n')
	}
	return out
}

func readGoldenInputs(t *testing.T, dir string) []goldenInput {
	f, err := os.Open(filepath.Join(dir, "inputs.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var inputs []goldenInput
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var in goldenInput
		if err := json.Unmarshal(sc.Bytes(), &in); err != nil {
			t.Fatalf("inputs.jsonl line %d: %v", len(inputs)+1, err)
		}
		inputs = append(inputs, in)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return inputs
}

func writeGolden(t *testing.T, g golden) {
	inputs := goldenHistory(t, g)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for _, in := range inputs {
		if err := enc.Encode(in); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(g.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(g.dir, "inputs.jsonl"), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(g.dir, "batches.jsonl"), foldGolden(t, g.cfg, inputs), 0o644); err != nil {
		t.Fatal(err)
	}
}

// goldenHistory is a few hours of a busy ferry on the tiny deal, drawn
// from a fixed seed: producers' events (good, duplicate, conflicting,
// another spelling, invalid, undecodable, oversized, hostile), piece
// workers' answers, ticks every 20 s of stored time (some from a wrong
// clock), operators' orders, and a deal engine that answers what the fold
// offers: deals, failures, failed offers and silence. The engine reads the
// fold's decisions, as the live one reads the aggregate log.
func goldenHistory(t *testing.T, g golden) []goldenInput {
	rng := rand.New(rand.NewPCG(2026, 12))
	st := New(g.cfg)
	stored := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	var inputs []goldenInput
	var ready, offered []uint64 // aggregates the engine has to answer
	queued := map[string]int{}  // CARs waiting for a piece worker
	push := func(data []byte) {
		stored = stored.Add(time.Duration(1+rng.IntN(4)) * time.Second)
		in := goldenInput{Seq: uint64(len(inputs) + 1), Stored: stored, Data: string(data)}
		inputs = append(inputs, in)
		b := st.ApplyInput(Input{Seq: in.Seq, Data: data, Stored: in.Stored})
		for _, d := range b.Decisions {
			switch d.Type {
			case events.DecCarQueued:
				queued[d.Car] = len(inputs)
			case events.DecCarAdded, events.DecCarRejected:
				delete(queued, d.Car)
			case events.DecAggReady, events.DecAggRetry:
				ready = append(ready, d.Aggregate)
			}
		}
	}
	event := func(ev events.Event) { push(testutil.MustEncode(ev)) }
	lastTick := stored
	next := 0     // the next fresh CAR
	huge := false // the 100 KB CAR text was sent
	for len(inputs) < 1500 {
		switch r := rng.IntN(100); {
		case stored.Sub(lastTick) >= 20*time.Second:
			lastTick = stored
			switch rng.IntN(40) {
			case 0:
				event(&events.Tick{Time: stored.Add(time.Hour)}) // a clock far ahead: ignored
			case 1:
				event(&events.Tick{Time: stored.Add(-time.Hour)}) // a clock behind: ignored
			default:
				event(&events.Tick{Time: stored})
			}
		case r < 45: // a fresh CAR, most with a piece
			size := opSizes[next%len(opSizes)]
			e := testutil.Replicated(next, size, rng.IntN(4) > 0 && size <= 2032)
			if space := 0; g.grouped {
				if space = rng.IntN(6); space > 0 { // tenants of a few CARs each, and some of none
					e.Source = json.RawMessage(fmt.Sprintf(`{"space":"space-%d","account":"acct-%d"}`, space, space%2))
				}
			}
			event(e)
			next++
		case r < 50 && next > 0: // a retried publish
			n := rng.IntN(next)
			event(testutil.Replicated(n, opSizes[n%len(opSizes)], true))
		case r < 53 && next > 0: // a copy that disagrees
			e := testutil.Replicated(rng.IntN(next), 999, false)
			e.MD5 = "00000000000000000000000000000000"
			event(e)
		case r < 55 && next > 0: // the same CAR in base36
			n := rng.IntN(next)
			e := testutil.Replicated(n, opSizes[n%len(opSizes)], false)
			e.Car = testutil.CarCID(n).Encode(opBase36)
			event(e)
		case r < 58: // invalid and undecodable events
			switch rng.IntN(6) {
			case 0:
				e := testutil.Replicated(next, 500, false)
				e.MD5 = "nothex"
				event(e)
			case 1:
				push([]byte(`{"type":"car.replicated","version":1,"car":"` + testutil.CarCID(rng.IntN(next+1)).String() + `","size":"10"}`))
			case 2: // finding 1 of issue 15 once, then smaller
				n := 1000
				if !huge {
					n, huge = 100_000, true
				}
				push([]byte(`{"type":"car.replicated","version":1,"car":"` + strings.Repeat("<", n) + `"}`))
			case 3:
				push([]byte(`{"type":"car.bogus","version":1}`))
			case 4:
				push([]byte(`{"type":"car.replicated","version":2,"car":"x"}`))
			default:
				push([]byte("not json"))
			}
		case r < 72 && len(queued) > 0: // a piece worker answers the oldest queued CAR
			car, at := "", len(inputs)+1
			for c, i := range queued {
				if i < at {
					car, at = c, i
				}
			}
			var n int
			for n = 0; testutil.CarCID(n).String() != car; n++ {
			}
			if rng.IntN(8) == 0 {
				event(&events.CarInvalid{Car: car, Reason: "md5 mismatch"})
			} else {
				p := testutil.FakePiece(n, opSizes[n%len(opSizes)])
				event(&events.CarPiece{Car: car, Piece: p.MustV2().String()})
			}
		case r < 82 && len(ready) > 0: // the dealer offers
			a := ready[0]
			ready = ready[1:]
			if rng.IntN(6) == 0 {
				event(&events.OfferFailed{Aggregate: a, Reason: "engine unreachable"})
			} else {
				event(&events.DealOffered{Aggregate: a, Engine: "sim"})
				offered = append(offered, a)
			}
		case r < 94 && len(offered) > 0: // the engine reports, or stays silent
			a := offered[0]
			offered = offered[1:]
			switch rng.IntN(6) {
			case 0: // silence: the deal clock times the offer out
			case 1:
				event(&events.DealReport{Aggregate: fmt.Sprint(a), Status: events.StatusFailed, Reason: "provider declined"})
			default:
				event(&events.DealReport{Aggregate: fmt.Sprint(a), Status: events.StatusActive,
					Deals: []events.Deal{{Provider: "f01000", DealID: uint64(len(inputs))}}})
			}
		case r < 97: // an operator
			a := uint64(1 + rng.IntN(int(st.target(""))))
			switch rng.IntN(3) {
			case 0:
				event(&events.AggregateClose{Aggregate: st.target(""), By: "operator"})
			case 1:
				event(&events.AggregateReoffer{Aggregate: a, By: fmt.Sprintf("operator at %d", len(inputs))})
			default:
				event(&events.AggregateFail{Aggregate: a, Reason: "operator", By: fmt.Sprintf("operator at %d", len(inputs))})
			}
		default:
			if g.grouped && rng.IntN(6) == 0 { // an operator changes the policy
				ch := &events.SettingsChange{By: fmt.Sprintf("operator at %d", len(inputs))}
				switch rng.IntN(3) {
				case 0:
					ch.GroupBy = &[]string{"none", "source.space", "source.account"}[rng.IntN(3)]
				case 1:
					w := time.Duration(1+rng.IntN(4)) * time.Minute
					ch.GroupMaxWait = &w
				default:
					w := time.Duration(30+rng.IntN(90)) * time.Second
					ch.MaxWait = &w
				}
				event(ch)
				continue
			}
			stored = stored.Add(5 * time.Second) // quiet
		}
	}
	return inputs
}
