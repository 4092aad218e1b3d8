package aggregator

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/events"
)

// checkSnapshots holds snapshots to their rule on a log of inputs: the
// state loaded from a snapshot taken after any batch equals, byte for
// byte, the state a replay of the stored log from sequence 1 up to that
// batch gives, and it decides what the uninterrupted fold decided.
//
// The uninterrupted fold is the reference: it takes a snapshot after each
// batch (as the leader does at its snapshot positions). A second state
// replays the stored batches from sequence 1; at each batch its encoding
// must be the snapshot's, and the snapshot loaded (with a copy of the
// replayed state's dedupe set) must decide the next ahead inputs as the
// uninterrupted fold did. Every fullEvery-th snapshot, the loaded state
// and a fresh rebuild from sequence 1 both fold the rest of the log.
func checkSnapshots(t *testing.T, cfg events.Settings, inputs []Input, ahead, fullEvery int) {
	t.Helper()
	live := New(cfg)
	outs := make([][]byte, len(inputs)) // each input's batch, encoded (nil: none)
	var log [][]byte                    // the stored batches
	var logAt []int                     // the input index of each
	var snaps [][]byte                  // the snapshot after each
	for i, in := range inputs {
		b := live.ApplyInput(in)
		if len(b.Decisions) == 0 {
			continue
		}
		data, err := events.EncodeBatch(nil, &b)
		if err != nil {
			t.Fatal(err)
		}
		outs[i] = data
		log = append(log, data)
		logAt = append(logAt, i)
		snaps = append(snaps, live.MarshalSnapshot(nil))
	}
	if len(log) < 10 {
		t.Fatalf("only %d batches: the log tests too little", len(log))
	}
	// cont folds inputs after st's position and compares with outs, up
	// to n inputs (all when n < 0).
	cont := func(st *State, n int, what string) {
		t.Helper()
		for i, in := range inputs {
			if in.Seq <= st.LastIn() {
				continue
			}
			if n == 0 {
				return
			}
			n--
			b := st.ApplyInput(in)
			var got []byte
			if len(b.Decisions) > 0 {
				var err error
				if got, err = events.EncodeBatch(nil, &b); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(got, outs[i]) {
				t.Fatalf("%s: input %d decides\n%s\nnot\n%s", what, in.Seq, got, outs[i])
			}
		}
	}
	rebuilt := New(cfg)
	for k, data := range log {
		var b events.Batch
		if err := events.DecodeBatch(data, &b); err != nil {
			t.Fatal(err)
		}
		if err := rebuilt.Replay(b); err != nil {
			t.Fatalf("replay of batch %d: %v", k+1, err)
		}
		if got := rebuilt.MarshalSnapshot(nil); !bytes.Equal(got, snaps[k]) {
			t.Fatalf("after batch %d (input %d) the rebuilt state encodes otherwise than the snapshot:\n%x\n%x", k+1, b.In, got, snaps[k])
		}
		acc := MapAccepted(maps.Clone(rebuilt.Accepted().(MapAccepted)))
		loaded, err := LoadSnapshot(snaps[k], cfg, acc)
		if err != nil {
			t.Fatalf("snapshot after batch %d: %v", k+1, err)
		}
		if got := loaded.MarshalSnapshot(nil); !bytes.Equal(got, snaps[k]) {
			t.Fatalf("the snapshot after batch %d loads to a state that encodes otherwise", k+1)
		}
		if loaded.LastIn() != inputs[logAt[k]].Seq {
			t.Fatalf("the snapshot after batch %d is at input %d, want %d", k+1, loaded.LastIn(), inputs[logAt[k]].Seq)
		}
		if k%fullEvery != 0 {
			cont(loaded, ahead, fmt.Sprintf("loaded from the snapshot after batch %d", k+1))
			continue
		}
		cont(loaded, -1, fmt.Sprintf("loaded from the snapshot after batch %d", k+1))
		fresh := New(cfg)
		for _, data := range log[:k+1] {
			var b events.Batch
			if err := events.DecodeBatch(data, &b); err != nil {
				t.Fatal(err)
			}
			if err := fresh.Replay(b); err != nil {
				t.Fatal(err)
			}
		}
		cont(fresh, -1, fmt.Sprintf("rebuilt from sequence 1 to batch %d", k+1))
	}
}

func TestSnapshotsOfTheGoldenLogLoadTheStateARebuildMakes(t *testing.T) {
	for _, g := range []golden{goldenPlain, goldenGrouped} {
		var inputs []Input
		for _, in := range readGoldenInputs(t, g.dir) {
			inputs = append(inputs, Input{Seq: in.Seq, Data: []byte(in.Data), Stored: in.Stored})
		}
		checkSnapshots(t, g.cfg, inputs, 8, 250)
	}
}

func TestSnapshotsOfRandomLogsLoadTheStateARebuildMakes(t *testing.T) {
	for seed := uint64(1); seed <= 2; seed++ {
		checkSnapshots(t, testConfig(), seqInputs(randomLog(seed, 600)), 8, 200)
	}
	// The fuzz tests' operations over a tiny deal, which reach deal
	// timeouts, backoffs and requeues within a few inputs.
	rng := rand.New(rand.NewPCG(19, 4))
	for i := range 40 {
		ops := make([]byte, 3*maxFuzzInputs)
		for j := range ops {
			ops[j] = byte(rng.Uint32())
		}
		inputs := seqInputs(opInputs(ops))
		cfg := fuzzFoldConfig(i%2 == 1)
		live, n := New(cfg), 0
		for _, in := range inputs {
			if len(live.ApplyInput(in).Decisions) > 0 {
				n++
			}
		}
		if n >= 10 {
			checkSnapshots(t, cfg, inputs, maxFuzzInputs, 1)
		}
	}
}

func seqInputs(log [][]byte) []Input {
	out := make([]Input, len(log))
	for i, data := range log {
		out[i] = Input{Seq: uint64(i + 1), Data: data}
	}
	return out
}

// goldenSnapshot is the golden log's state at its end, encoded, with its
// settings and a copy of its dedupe set.
func goldenSnapshot(t *testing.T) ([]byte, events.Settings, MapAccepted) {
	cfg := goldenConfig()
	st := New(cfg)
	for _, in := range readGoldenInputs(t, goldenPlain.dir) {
		st.ApplyInput(Input{Seq: in.Seq, Data: []byte(in.Data), Stored: in.Stored})
	}
	return st.MarshalSnapshot(nil), cfg, maps.Clone(st.Accepted().(MapAccepted))
}

func TestASnapshotThatIsNotWholeIsRefused(t *testing.T) {
	data, cfg, acc := goldenSnapshot(t)
	// Every cut in the first KiB (the header, the queue, the aggregates'
	// records), then every 61st byte.
	for n := 0; n < len(data); n += 1 + n/1024*60 {
		if _, err := LoadSnapshot(data[:n], cfg, acc); !errors.Is(err, ErrSnapshot) {
			t.Fatalf("the first %d of %d bytes load: %v", n, len(data), err)
		}
	}
	if _, err := LoadSnapshot(append(bytes.Clone(data), 0), cfg, maps.Clone(acc)); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("a snapshot with a byte after its end loads: %v", err)
	}
	future := bytes.Clone(data)
	future[len(snapshotMagic)] = snapshotVersion + 1
	if _, err := LoadSnapshot(future, cfg, maps.Clone(acc)); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("a snapshot of a later version loads: %v", err)
	}
}

func TestASnapshotLoadsOnlyUnderItsSettingsAndWithItsDedupeSet(t *testing.T) {
	data, cfg, acc := goldenSnapshot(t)
	other := cfg
	other.MaxWait += time.Second
	if _, err := LoadSnapshot(data, other, maps.Clone(acc)); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("a snapshot loads under other settings: %v", err)
	}
	short := maps.Clone(acc)
	for k := range short {
		delete(short, k)
		break
	}
	if _, err := LoadSnapshot(data, cfg, short); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("a snapshot loads with a dedupe set one CAR short: %v", err)
	}
	if _, err := LoadSnapshot(data, cfg, maps.Clone(acc)); err != nil {
		t.Fatal(err)
	}
}

func TestSnapshotPositionsDependOnTheBatchesAlone(t *testing.T) {
	for _, c := range []struct {
		prev, in, every uint64
		due             bool
	}{
		{0, 1, 1, true}, {0, 99, 100, false}, {0, 100, 100, true}, {99, 100, 100, true},
		{100, 101, 100, false}, {150, 350, 100, true}, {199, 199, 100, false}, {5, 500, 0, false},
	} {
		if got := SnapshotDue(c.prev, c.in, c.every); got != c.due {
			t.Errorf("SnapshotDue(%d, %d, %d) = %v, want %v", c.prev, c.in, c.every, got, c.due)
		}
	}
}
