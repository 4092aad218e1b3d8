package bench

import (
	"context"
	"flag"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/projections"
)

// BenchmarkReplay is the Replay line: rebuild the read models of
// -ferry.cars CARs from the aggregate log, as `ferry replay` does
// (projections.Open on a new file, NewProjector(...).Run(ctx, false)),
// against a raw ordered-consumer read of the same stream on the same
// server.
//
// The log is made once, outside the timing, by ferry itself: the events
// are published into FERRY_IN and the aggregator's Runner appends their
// batches (one per CAR plus the closes), grouped into messages as it
// groups them under a burst of inputs.
//
// Metrics: s (the wall time of one replay or read, the figure), cars/s,
// cars, msgs (the aggregate log's messages), cpu-s (this process, server
// included), MiB-viewsdb (the read models' file), MiB-jetstream (the
// server's store, both logs), MiB-hwm.
var flagReplayCPU = flag.String("ferry.replay-cpuprofile", "", "write the CPU profile of the ferry replays alone (not the log's set-up) to `file`")

func BenchmarkReplay(b *testing.B) {
	n := *flagCars
	f := fleetOf(b, n)
	nt := testutil.StartNATS(b)
	last := aggregateLog(b, nt, f, n)
	b.Run("ferry", func(b *testing.B) {
		for i := range b.N {
			b.StopTimer()
			path := filepath.Join(b.TempDir(), "views-"+strconv.Itoa(i)+".db")
			ctx := context.Background()
			stopProfile := startCPUProfile(b, *flagReplayCPU)
			start, cpu0 := time.Now(), cpuTime()
			b.StartTimer()
			store, err := projections.Open(path, *flagDeal)
			if err != nil {
				b.Fatal(err)
			}
			if err := projections.NewProjector(nt.JS, store, quietLog()).Run(ctx, false); err != nil {
				b.Fatal(err)
			}
			took, cpu := time.Since(start), cpuTime()-cpu0
			b.StopTimer()
			stopProfile()
			if got := store.AggSeq(); got != last {
				b.Fatalf("replay stopped at %d of %d", got, last)
			}
			verifyStore(b, store, f, n)
			store.Close()
			reportReplay(b, n, last, took, cpu)
			b.ReportMetric(MiB(DirSize(path)), "MiB-viewsdb")
			b.ReportMetric(MiB(DirSize(nt.Dir)), "MiB-jetstream")
			b.StartTimer()
		}
		reportMem(b, "")
	})
	b.Run("raw", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			start, cpu0 := time.Now(), cpuTime()
			b.StartTimer()
			if _, err := rawRead(context.Background(), nt.JS, jetlog.StreamAgg, last); err != nil {
				b.Fatal(err)
			}
			took, cpu := time.Since(start), cpuTime()-cpu0
			b.StopTimer()
			reportReplay(b, n, last, took, cpu)
			b.StartTimer()
		}
		reportMem(b, "")
	})
}

func reportReplay(b *testing.B, cars int, msgs uint64, took, cpu time.Duration) {
	b.ReportMetric(took.Seconds(), "s")
	b.ReportMetric(float64(cars)/took.Seconds(), "cars/s")
	b.ReportMetric(cpu.Seconds(), "cpu-s")
	b.ReportMetric(float64(cars), "cars")
	b.ReportMetric(float64(msgs), "msgs")
}

// aggregateLog publishes the first n events of f into FERRY_IN and runs
// the aggregator until it has appended their batches; it returns the
// aggregate log's last sequence.
func aggregateLog(b *testing.B, nt *testutil.NATS, f *fleet, n int) uint64 {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := aggregator.NewRunner(nt.JS, aggregator.RunnerConfig{Fold: foldConfig(), Subjects: jetlog.DefaultSubjects,
		Holder: "bench", Log: quietLog()})
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	if err := publishFleet(ctx, nt.JS, f, n); err != nil {
		b.Fatal(err)
	}
	// Applied is not stored: the runner's appends are asynchronous, and
	// one that is still on its way when the count is read makes the log
	// longer than the count (seen in CI: "replay stopped at 81 of 75").
	// Wait until the log holds every append the runner has sent.
	var last uint64
	testutil.Eventually(b, time.Hour, "the aggregator to append every batch", func() bool {
		st := r.Status()
		last = st.AggSeq
		return st.LastIn >= uint64(n) && streamLast(ctx, b, nt.JS, jetlog.StreamAgg) == last
	})
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	if got := streamLast(context.Background(), b, nt.JS, jetlog.StreamAgg); got != last {
		b.Fatalf("aggregate log at %d after the runner stopped, %d appended", got, last)
	}
	return last
}
