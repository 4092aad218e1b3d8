package projections

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/ferry-dev/ferry/events"

	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
)

// drain hands the writer whole messages only: every transaction ends at a
// message's last batch, takes at least limit batches when that many are
// ready, and a message cut short by the reader's end is left out.
func TestDrainTakesWholeMessages(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for round := range 200 {
		limit := 1 + r.IntN(40)
		ch := make(chan LoggedBatch, 10000)
		var sent []LoggedBatch
		seq, in := uint64(0), uint64(0)
		for range 1 + r.IntN(60) {
			seq++
			k := 1 + r.IntN(30)
			for j := range k {
				in++
				e := LoggedBatch{Seq: seq, Batch: events.Batch{In: in}, end: j == k-1}
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
				ch <- LoggedBatch{Seq: seq, Batch: events.Batch{In: in}}
			}
		}
		close(ch)
		var got []LoggedBatch
		for {
			txn, ok := drain(ch, limit)
			if len(txn) > 0 && !txn[len(txn)-1].end {
				t.Fatalf("round %d: a transaction ends inside message %d", round, txn[len(txn)-1].Seq)
			}
			if ok && len(txn) < limit {
				t.Fatalf("round %d: %d batches ready, took %d below limit %d", round, len(ch), len(txn), limit)
			}
			got = append(got, txn...)
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

// Read models that applied a log which then lost its tail and made it
// again, grouped into messages otherwise, are found apart from the log and
// rebuilt: whether the message at their position is gone (the new log is
// shorter) or ends with another batch.
func TestReadModelsApartFromARegroupedLogAreRebuilt(t *testing.T) {
	const dealSize = 1 << 20
	entries, cars, want := foldLog(t, 300, dealSize)
	ctx := context.Background()
	nt := testutil.StartNATS(t)
	// appendLog makes the aggregate log anew with the batches in messages
	// of per batches each.
	appendLog := func(per int) uint64 {
		t.Helper()
		_ = nt.JS.DeleteStream(ctx, jetlog.StreamAgg)
		if err := jetlog.EnsureStreams(ctx, nt.JS, jetlog.StreamOptions{Subjects: jetlog.DefaultSubjects}); err != nil {
			t.Fatal(err)
		}
		var last uint64
		for i := 0; i < len(entries); i += per {
			var msg []byte
			for _, e := range entries[i:min(i+per, len(entries))] {
				data, err := events.EncodeBatch(nil, &e.Batch)
				if err != nil {
					t.Fatal(err)
				}
				msg = events.AppendBatch(msg, data)
			}
			ack, err := nt.JS.Publish(ctx, jetlog.DefaultSubjects.Decisions(), msg)
			if err != nil {
				t.Fatal(err)
			}
			last = ack.Sequence
		}
		return last
	}
	for _, c := range []struct{ before, after int }{{1, 2}, {2, 1}, {3, 3}} {
		store, err := Open(filepath.Join(t.TempDir(), "views.db"), dealSize)
		if err != nil {
			t.Fatal(err)
		}
		appendLog(c.before)
		if err := NewProjector(nt.JS, store, slog.New(slog.DiscardHandler)).Run(ctx, false); err != nil {
			t.Fatal(err)
		}
		lastIn := store.LastIn()
		last := appendLog(c.after)
		if err := NewProjector(nt.JS, store, slog.New(slog.DiscardHandler)).Run(ctx, false); err != nil {
			t.Fatalf("%d per message, then %d: %v", c.before, c.after, err)
		}
		if store.AggSeq() != last || store.LastIn() != lastIn {
			t.Fatalf("%d per message, then %d: read models at message %d, input %d; the log ends at %d, input %d",
				c.before, c.after, store.AggSeq(), store.LastIn(), last, lastIn)
		}
		checkCars(t, store, cars, want)
		store.Close()
	}
}
