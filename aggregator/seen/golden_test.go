package seen_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/aggregator/seen"
	"github.com/ferry-dev/ferry/events"
)

// The aggregator's golden log, folded with the dedupe set on disk and
// checkpoints persisted by another goroutine while the fold goes on, is
// the golden aggregate log byte for byte; the state rebuilt from it with
// the in-heap map holds the same keys as the index opened from the last
// manifest.
func TestTheGoldenLogFoldsAlikeWithTheIndex(t *testing.T) {
	ctx := context.Background()
	want, err := os.ReadFile("../testdata/golden/batches.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	var first events.Batch
	if err := events.DecodeBatch(bytes.SplitN(want, []byte("\n"), 2)[0], &first); err != nil {
		t.Fatal(err)
	}
	cfg := *first.Decisions[0].Settings

	store := seen.DirStore(t.TempDir())
	ix := seen.New(t.TempDir())
	st := aggregator.NewWith(cfg, ix)
	frozen, manifests := persister(t, store)
	var got []byte
	for i, in := range readInputs(t) {
		b := st.ApplyInput(in)
		if len(b.Decisions) > 0 {
			if got, err = events.EncodeBatch(got, &b); err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
		}
		if i%7 == 6 {
			frozen <- ix.Checkpoint()
		}
	}
	frozen <- ix.Checkpoint()
	close(frozen)
	last := <-manifests
	if !bytes.Equal(got, want) {
		t.Fatal("the fold with the seen index made another aggregate log than the golden one")
	}

	heap := aggregator.New(cfg)
	for line := range bytes.Lines(want) {
		var b events.Batch
		if err := events.DecodeBatch(bytes.TrimSuffix(line, []byte("\n")), &b); err != nil {
			t.Fatal(err)
		}
		if err := heap.Replay(b); err != nil {
			t.Fatal(err)
		}
	}
	m := heap.Accepted().(aggregator.MapAccepted)
	opened, err := seen.Open(ctx, last, store, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer opened.Close()
	if got, want := opened.Len(), len(m); got != want || ix.Len() != want {
		t.Fatalf("the opened index holds %d keys and the live one %d, the replayed map %d", got, ix.Len(), want)
	}
	for k, p := range m {
		if got, ok := opened.Get(k); !ok || got != p {
			t.Fatalf("key %x: the opened index says %d,%v, the replayed map %d", k, got, ok, p)
		}
	}
}

func readInputs(t *testing.T) []aggregator.Input {
	f, err := os.Open("../testdata/golden/inputs.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ins []aggregator.Input
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var in struct {
			Seq    uint64    `json:"seq"`
			Stored time.Time `json:"stored"`
			Data   string    `json:"data"`
		}
		if err := json.Unmarshal(sc.Bytes(), &in); err != nil {
			t.Fatal(err)
		}
		ins = append(ins, aggregator.Input{Seq: in.Seq, Data: []byte(in.Data), Stored: in.Stored})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return ins
}
