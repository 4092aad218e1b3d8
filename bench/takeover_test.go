package bench

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/aggregator/seen"
	"github.com/ferry-dev/ferry/aggregator/snapshots"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go/jetstream"
)

var (
	flagTakeoverCars  = flag.Int("ferry.takeover-cars", envInt("FERRY_BENCH_TAKEOVER_CARS", 200_000), "CARs of history before a takeover (full scale: 10000000)")
	flagTakeoverEvery = flag.Int("ferry.takeover-every", envInt("FERRY_BENCH_TAKEOVER_EVERY", 20_000), "inputs between snapshots (ferry serve --snapshot-every; full scale: its default, 100000)")
	flagTakeoverFull  = flag.Int("ferry.takeover-full", envInt("FERRY_BENCH_TAKEOVER_FULL", 50_000), "CARs of the baseline log rebuilt from sequence 1 (full scale: 1000000)")
)

// BenchmarkTakeover is the takeover line: a new leader's Rebuild
// (aggregator.Rebuild through package snapshots: load the latest
// snapshot, open its dedupe index, fold the aggregate log after it) with
// -ferry.takeover-cars CARs of history, at the worst point: the last
// snapshot is -ferry.takeover-every minus one inputs behind the log's
// end.
//
//   - standby: the snapshot's runs are in the cache already (a standby
//     prefetched them), the case of a ferry standing by;
//   - cold: an empty cache, every run read from the bucket (a ferry that
//     starts on a new disk);
//   - full: the baseline, measured in the same run: the rebuild of a log
//     of -ferry.takeover-full CARs from sequence 1, as every takeover did
//     before snapshots (the dedupe set in the heap).
//
// The history is made synthetically, outside the timing: the CARs'
// car.replicated inputs (1–4 MiB CARs with their pieces, deals for every
// aggregate that closes) are folded in memory through a state whose
// dedupe set is a seen index, checkpointed at every snapshot position as
// the leader does; then the last snapshot (its runs and state) and the
// aggregate log from its message on are written into a real JetStream,
// FERRY_AGG starting at that message's sequence (the messages before it
// are never read by a takeover).
//
// Metrics: s (the wall time of one Rebuild, the figure), tail-batches
// (batches folded after the snapshot), MiB-runs (the dedupe runs the
// snapshot names), KiB-state (the state without the dedupe set), cars.
func BenchmarkTakeover(b *testing.B) {
	n, every := *flagTakeoverCars, uint64(*flagTakeoverEvery)
	h := takeoverHistory(b, n, every)
	b.Run("standby", func(b *testing.B) {
		store := openSnapshots(b, h.js, filepath.Join(b.TempDir(), "seen"))
		if err := store.Prefetch(context.Background()); err != nil {
			b.Fatal(err)
		}
		var took time.Duration
		for range b.N {
			took += h.rebuild(b, store)
		}
		h.report(b, took)
	})
	b.Run("cold", func(b *testing.B) {
		var took time.Duration
		for range b.N {
			b.StopTimer()
			store := openSnapshots(b, h.js, filepath.Join(b.TempDir(), "seen"))
			b.StartTimer()
			took += h.rebuild(b, store)
		}
		h.report(b, took)
	})
	full := *flagTakeoverFull
	nt, want := fullLog(b, full)
	b.Run("full", func(b *testing.B) {
		var took time.Duration
		for range b.N {
			start := time.Now()
			st, seq, err := aggregator.Rebuild(context.Background(), nt.JS, foldConfig(), nil)
			took += time.Since(start)
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if seq != want || st.Counts().Accepted != full {
				b.Fatalf("full rebuild at %d with %d CARs, want %d with %d", seq, st.Counts().Accepted, want, full)
			}
			b.StartTimer()
		}
		b.ReportMetric(took.Seconds()/float64(b.N), "s")
		b.ReportMetric(float64(full), "cars")
	})
}

// history is a takeover's setting: the snapshot in FERRY_SNAP and the
// aggregate log after it in FERRY_AGG.
type history struct {
	js       jetstream.JetStream
	cars     int
	snap     aggregator.Snapshot
	end      uint64 // FERRY_AGG's last sequence
	tail     int    // batches after the snapshot
	runBytes int64
	want     []byte // the state at the end, encoded
}

// rebuild times one Rebuild through store and checks it reached the end
// with the state the history's fold had there.
func (h *history) rebuild(b *testing.B, store *snapshots.Store) time.Duration {
	start := time.Now()
	st, seq, err := aggregator.Rebuild(context.Background(), h.js, foldConfig(), store)
	took := time.Since(start)
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	defer b.StartTimer()
	got := st.MarshalSnapshot(nil)
	st.Accepted().(*seen.Index).Close()
	if seq != h.end || string(got) != string(h.want) {
		b.Fatalf("rebuild reached %d of %d; state equal: %v", seq, h.end, string(got) == string(h.want))
	}
	return took
}

// report reports the mean of n rebuilds that took took in all, and what
// they rebuilt.
func (h *history) report(b *testing.B, took time.Duration) {
	b.ReportMetric(took.Seconds()/float64(b.N), "s")
	b.ReportMetric(float64(h.tail), "tail-batches")
	b.ReportMetric(MiB(uint64(h.runBytes)), "MiB-runs")
	b.ReportMetric(float64(len(h.snap.State))/1024, "KiB-state")
	b.ReportMetric(float64(h.cars), "cars")
}

func openSnapshots(tb testing.TB, js jetstream.JetStream, cache string) *snapshots.Store {
	tb.Helper()
	s, err := snapshots.Open(context.Background(), js, cache, quietLog())
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// carInputs sends the car.replicated input of CARs 0..n-1, encoded, made
// on another goroutine (the history's fold is the setup's bottleneck).
func carInputs(n int) <-chan []byte {
	out := make(chan []byte, 4096)
	go func() {
		defer close(out)
		lo, hi := uint64(*flagMinMiB)<<20, uint64(*flagMaxMiB)<<20
		rng := rand.New(rand.NewPCG(uint64(n), 19))
		for i := range n {
			c := testutil.CarCID(i).String()
			sum := md5.Sum([]byte(c))
			size := lo + rng.Uint64N(hi-lo+1)
			out <- testutil.MustEncode(&events.CarReplicated{Car: c, Size: size, MD5: hex.EncodeToString(sum[:]),
				URLs:         []string{"https://carpark.example/" + c + "/" + c + ".car"},
				ReplicatedAt: "2026-11-22T12:00:00Z", Piece: testutil.FakePiece(i, size).MustV2().String()})
		}
	}()
	return out
}

// folder folds a synthetic history: CARs, and for every aggregate that
// closes its offer and its deal, as the dealer and the deal engine would
// publish them.
type folder struct {
	st  *aggregator.State
	seq uint64
}

// apply folds one input and the deal inputs of the aggregates it closed;
// emit is called with every batch.
func (f *folder) apply(data []byte, emit func(events.Batch)) {
	f.seq++
	b := f.st.ApplyInput(aggregator.Input{Seq: f.seq, Data: data})
	emit(b)
	for _, d := range b.Decisions {
		if d.Type != events.DecAggReady {
			continue
		}
		f.seq++
		emit(f.st.ApplyInput(aggregator.Input{Seq: f.seq, Data: testutil.MustEncode(&events.DealOffered{Aggregate: d.Aggregate})}))
		f.seq++
		report := &events.DealReport{Aggregate: strconv.FormatUint(d.Aggregate, 10), Status: events.StatusPublished,
			Deals: []events.Deal{{Provider: "f01000", DealID: d.Aggregate}}}
		emit(f.st.ApplyInput(aggregator.Input{Seq: f.seq, Data: testutil.MustEncode(report)}))
	}
}

// messages groups encoded batches into aggregate-log messages as the
// runner does under a burst: up to 256 batches and 64 KiB. It counts the
// messages it completed, keeps the last, and keeps them all with keep.
type messages struct {
	keep  bool
	msgs  [][]byte // the completed messages, with keep
	count uint64   // completed messages
	last  []byte   // the last completed message
	cur   []byte
	n     int
}

func (m *messages) add(batch []byte) {
	if m.n > 0 && (m.n == 256 || len(m.cur)+1+len(batch) > 64<<10) {
		m.end()
	}
	m.cur = events.AppendBatch(m.cur, batch)
	m.n++
}

func (m *messages) end() {
	if m.n == 0 {
		return
	}
	m.count++
	m.last = m.cur
	if m.keep {
		m.msgs = append(m.msgs, m.cur)
	}
	m.cur, m.n = nil, 0
}

// takeoverHistory makes the history of about n CARs
// with a snapshot position every `every` inputs: the fold runs until
// every-1 inputs are past the first snapshot position at which fewer
// than every CARs of the n are left.
func takeoverHistory(b *testing.B, n int, every uint64) *history {
	b.Helper()
	ctx := context.Background()
	dir := b.TempDir()
	runs := seen.DirStore(filepath.Join(dir, "runs"))
	if err := os.MkdirAll(filepath.Join(dir, "index"), 0o755); err != nil {
		b.Fatal(err)
	}
	ix := seen.New(filepath.Join(dir, "index"))
	f := &folder{st: aggregator.NewWith(foldConfig(), ix)}
	var (
		msgs    messages
		prevIn  uint64
		snap    aggregator.Snapshot
		snapMsg []byte
		tail    int
		done    int // CARs folded
		scratch []byte
		// the fold goroutine's part of the last snapshot: the seen
		// index's checkpoint and the state's encoding
		checkpointed, encoded time.Duration
	)
	emit := func(bt events.Batch) {
		if len(bt.Decisions) == 0 {
			return
		}
		var err error
		if scratch, err = events.EncodeBatch(scratch[:0], &bt); err != nil {
			b.Fatal(err)
		}
		msgs.add(scratch) // copied into the message
		if msgs.keep {
			tail++
			return
		}
		due := aggregator.SnapshotDue(prevIn, bt.In, every)
		prevIn = bt.In
		if !due {
			return
		}
		// A snapshot position: its message ends here; the dedupe index is
		// checkpointed (and the state encoded) as in the leader's fold
		// goroutine, then persisted as its persister does.
		msgs.end()
		start := time.Now()
		frozen := ix.Checkpoint()
		checkpointed = time.Since(start)
		if snap.Seen, err = frozen.Persist(ctx, runs); err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		snap.Seq, snap.LastIn, snap.Digest = msgs.count, bt.In, sha256.Sum256(msgs.last)
		if n-done < int(every) {
			snap.State, snapMsg = f.st.MarshalSnapshot(nil), msgs.last
			encoded = time.Since(start)
			msgs.keep = true
		}
	}
	start := time.Now()
	cars := carInputs(n + int(every))
	for data := range cars {
		done++
		f.apply(data, emit)
		if msgs.keep && f.seq >= snap.LastIn+every-1 {
			break
		}
	}
	for range cars { // let the generator end
	}
	if !msgs.keep {
		b.Fatalf("no snapshot position within %d CARs", n+int(every))
	}
	msgs.end()
	b.Logf("history: %d CARs, %d inputs, snapshot after input %d (message %d), %d batches after it; made in %s; "+
		"at the snapshot the fold goroutine spent %s on the seen index's checkpoint and %s encoding the state (%d bytes)",
		done, f.seq, snap.LastIn, snap.Seq, tail, time.Since(start).Round(time.Second), checkpointed, encoded, len(snap.State))

	// Write the snapshot and the aggregate log from its message on.
	nt := testutil.StartNATSIn(b, filepath.Join(dir, "nats"))
	aggFrom(b, nt.JS, snap.Seq, append([][]byte{snapMsg}, msgs.msgs...))
	store := openSnapshots(b, nt.JS, filepath.Join(dir, "upload"))
	names, err := seen.Manifest(snap.Seen).RunNames()
	if err != nil {
		b.Fatal(err)
	}
	var runBytes int64
	for _, name := range names {
		fh, err := os.Open(filepath.Join(string(runs), name))
		if err != nil {
			b.Fatal(err)
		}
		if fi, err := fh.Stat(); err == nil {
			runBytes += fi.Size()
		}
		if err := store.Runs().Put(ctx, name, fh); err != nil {
			b.Fatal(err)
		}
		fh.Close()
	}
	if err := store.Store(ctx, snap); err != nil {
		b.Fatal(err)
	}
	ix.Close()
	os.RemoveAll(string(runs))
	h := &history{js: nt.JS, cars: done, snap: snap, end: snap.Seq + uint64(len(msgs.msgs)), tail: tail,
		runBytes: runBytes, want: f.st.MarshalSnapshot(nil)}
	return h
}

// aggFrom makes FERRY_AGG start at sequence first and holds msgs there.
func aggFrom(b *testing.B, js jetstream.JetStream, first uint64, msgs [][]byte) {
	b.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, jetlog.StreamAgg)
	if err != nil {
		b.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	if err := js.DeleteStream(ctx, jetlog.StreamAgg); err != nil {
		b.Fatal(err)
	}
	cfg.FirstSeq = first
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		b.Fatal(err)
	}
	for i, m := range msgs {
		ack, err := js.Publish(ctx, jetlog.DefaultSubjects.Decisions(), m)
		if err != nil {
			b.Fatal(err)
		}
		if ack.Sequence != first+uint64(i) {
			b.Fatalf("message %d stored at %d", first+uint64(i), ack.Sequence)
		}
	}
}

// fullLog is the aggregate log of a history of n CARs from sequence 1,
// in a JetStream of its own; it returns the log's last sequence.
func fullLog(b *testing.B, n int) (*testutil.NATS, uint64) {
	b.Helper()
	f := &folder{st: aggregator.New(foldConfig())}
	msgs := messages{keep: true}
	for data := range carInputs(n) {
		f.apply(data, func(bt events.Batch) {
			if len(bt.Decisions) == 0 {
				return
			}
			data, err := events.EncodeBatch(nil, &bt)
			if err != nil {
				b.Fatal(err)
			}
			msgs.add(data)
		})
	}
	msgs.end()
	nt := testutil.StartNATS(b)
	aggFrom(b, nt.JS, 1, msgs.msgs)
	return nt, uint64(len(msgs.msgs))
}
