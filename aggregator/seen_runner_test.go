package aggregator

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
)

// A runner whose dedupe set is the seen index (RunnerConfig.SeenDir)
// writes the aggregate log the in-heap fold makes of the same input log,
// across a step-down and a rebuild by another runner on the same cache:
// duplicates of CARs accepted before the rebuild are recognised after it.
func TestARunnerOnTheSeenIndexWritesTheLogTheHeapFoldMakes(t *testing.T) {
	nt := testutil.StartNATS(t)
	seenDir := t.TempDir()
	// Published without a message id, so the input log keeps repeats.
	publish := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			data, err := events.Encode(testutil.Replicated(i, 20_000+uint64(i), i%3 != 0))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := nt.JS.Publish(context.Background(), jetlog.DefaultSubjects.Input(events.TypeCarReplicated), data); err != nil {
				t.Fatal(err)
			}
		}
	}
	lead := func(holder string, lastIn uint64, publishWhileLeading func()) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		r := NewRunner(nt.JS, RunnerConfig{Fold: testConfig(), Subjects: jetlog.DefaultSubjects, Holder: holder,
			Log: slog.New(slog.NewTextHandler(io.Discard, nil)), SeenDir: seenDir})
		var wg sync.WaitGroup
		wg.Go(func() { _ = r.Run(ctx) })
		publishWhileLeading()
		testutil.Eventually(t, 20*time.Second, "the inputs folded", func() bool {
			st := r.Status()
			return st.Leader && st.LastIn == lastIn
		})
		cancel()
		wg.Wait()
	}
	lead("one", 60, func() { publish(0, 50); publish(0, 10) })  // 10 duplicates
	lead("two", 80, func() { publish(5, 15); publish(50, 60) }) // 10 accepted before the rebuild, 10 new

	st := New(testConfig())
	var want []byte
	err := jetlog.Tail(context.Background(), nt.JS, jetlog.StreamIn, 1, false, func(e jetlog.Entry) error {
		b := st.ApplyInput(Input{Seq: e.Seq, Data: e.Data, Stored: e.Time})
		if len(b.Decisions) == 0 {
			return nil
		}
		var err error
		want, err = events.EncodeBatch(want, &b)
		want = append(want, '\n')
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	dups := 0
	err = jetlog.Tail(context.Background(), nt.JS, jetlog.StreamAgg, 1, false, func(e jetlog.Entry) error {
		return events.EachBatch(e.Data, func(b *events.Batch) error {
			for _, d := range b.Decisions {
				if d.Type == events.DecInputIgnored && d.Reason == events.ReasonDuplicate {
					dups++
				}
			}
			var err error
			got, err = events.EncodeBatch(got, b)
			got = append(got, '\n')
			return err
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("the runner on the seen index wrote another log than the heap fold makes:\n got %s\nwant %s", got, want)
	}
	if dups != 20 {
		t.Fatalf("%d duplicates recognised, want 20", dups)
	}
}
