package projections

import (
	"math/rand/v2"
	"testing"

	"github.com/ferry-dev/ferry/aggregator"
)

// drain hands the writer whole messages only: every transaction ends at a
// message's last batch, takes at least limit batches when that many are
// ready, and a message cut short by the reader's end is left out.
func TestDrainTakesWholeMessages(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for round := range 200 {
		limit := 1 + r.IntN(40)
		ch := make(chan Entry, 10000)
		var sent []Entry
		seq, in := uint64(0), uint64(0)
		for range 1 + r.IntN(60) {
			seq++
			k := 1 + r.IntN(30)
			for j := range k {
				in++
				e := Entry{Seq: seq, Batch: aggregator.Batch{In: in}, end: j == k-1}
				sent = append(sent, e)
				ch <- e
			}
		}
		// Sometimes the reader dies inside a message.
		cut := r.IntN(2) == 0
		if cut {
			seq++
			for range 1 + r.IntN(5) {
				in++
				ch <- Entry{Seq: seq, Batch: aggregator.Batch{In: in}}
			}
		}
		close(ch)
		var got []Entry
		for {
			batch, ok := drain(ch, limit)
			if len(batch) > 0 && !batch[len(batch)-1].end {
				t.Fatalf("round %d: a transaction ends inside message %d", round, batch[len(batch)-1].Seq)
			}
			if ok && len(batch) < limit {
				t.Fatalf("round %d: %d batches ready, took %d below limit %d", round, len(ch), len(batch), limit)
			}
			got = append(got, batch...)
			if !ok {
				break
			}
		}
		if len(got) != len(sent) {
			t.Fatalf("round %d: applied %d batches, want %d (whole messages only)", round, len(got), len(sent))
		}
		for i := range got {
			if got[i].Batch.In != sent[i].Batch.In {
				t.Fatalf("round %d: batch %d is input %d, want %d", round, i, got[i].Batch.In, sent[i].Batch.In)
			}
		}
	}
}
