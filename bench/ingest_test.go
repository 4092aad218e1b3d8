package bench

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/internal/node"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/pieceworker"
	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkIngest is the Ingest line: -ferry.cars car.replicated events
// published until all are aggregated and visible in the status projection.
//
//   - ferry: jetlog.Publisher.PublishAsync into FERRY_IN of an embedded
//     server (testutil.StartNATS) with a node running on it (aggregator,
//     projector, receipts; no piece workers, no deal engine, no ticks).
//     Done when Projector.Seq reaches the aggregate log's last sequence,
//     which is -ferry.cars: every car.replicated with a piece makes one
//     batch. A sample of CARs is then read back with Store.Car.
//   - raw: the same bytes published with PublishMsgAsync into a plain
//     stream of a fresh server of the same kind, read back by an ordered
//     consumer running meanwhile; done when it has read them all.
//
// Metrics: events/s end to end (the figure), publish-s (until the last
// publish ack), aggregated-s (until the aggregator had appended every
// batch; ferry only), aggregates (closed while ingesting), MiB-hwm (this
// process: server, node and publisher together).
func BenchmarkIngest(b *testing.B) {
	n := *flagCars
	f := fleetOf(b, n)
	b.Run("ferry", func(b *testing.B) {
		for range b.N {
			ingestFerry(b, f, n)
		}
		reportMem(b, "")
		b.ReportMetric(float64(n), "cars")
	})
	b.Run("raw", func(b *testing.B) {
		b.StopTimer()
		arena, ends := f.encoded(b)
		b.StartTimer()
		for range b.N {
			ingestRaw(b, arena, ends)
		}
		reportMem(b, "")
		b.ReportMetric(float64(n), "cars")
	})
}

func ingestFerry(b *testing.B, f *fleet, n int) {
	b.StopTimer()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nt := testutil.StartNATS(b)
	data := b.TempDir()
	nd, err := node.Start(ctx, node.Config{
		Data: data, HTTP: "127.0.0.1:0", NATS: nt.URL(), Fold: foldConfig(), Duplicates: *flagDedup,
		Pieces: pieceworker.Config{Workers: -1}, Log: quietLog(),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer nd.Close()
	nd.Run(ctx)
	testutil.Eventually(b, 30*time.Second, "aggregator to lead", func() bool { return nd.Runner.Status().Leader })
	_, js := testutil.Connect(b, nt.URL())

	var aggregatedAt atomic.Int64 // ns since start
	start, cpu0 := time.Now(), cpuTime()
	b.StartTimer()
	watch := watchAggregator(ctx, nd, uint64(n), start, &aggregatedAt)
	if err := publishFleet(ctx, js, f, n); err != nil {
		b.Fatal(err)
	}
	published := time.Since(start)
	if err := nd.Projector.WaitForInput(ctx, uint64(n)); err != nil {
		b.Fatal(err)
	}
	visible, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	<-watch

	msgs := streamLast(ctx, b, nt.JS, jetlog.StreamAgg)
	if err := nd.Err(); err != nil {
		b.Fatal(err)
	}
	verifyStore(b, nd.Store, f, n)
	writeHeapProfile(b)
	st := nd.Runner.Status()
	if st.Counts.Accepted != n {
		b.Fatalf("aggregator accepted %d CARs, want %d", st.Counts.Accepted, n)
	}
	b.ReportMetric(float64(n)/visible.Seconds(), "events/s")
	b.ReportMetric(published.Seconds(), "publish-s")
	b.ReportMetric(time.Duration(aggregatedAt.Load()).Seconds(), "aggregated-s")
	b.ReportMetric(visible.Seconds(), "visible-s")
	b.ReportMetric(float64(st.Counts.Closed), "aggregates")
	b.ReportMetric(float64(n)/float64(msgs), "batches/msg")
	b.ReportMetric(cpu.Seconds()*1e6/float64(n), "cpu-µs/event")
	b.ReportMetric(MiB(DirSize(node.ReadModelPath(data))), "MiB-viewsdb")
	b.ReportMetric(MiB(DirSize(nt.Dir)), "MiB-jetstream")
	b.StartTimer()
}

// watchAggregator records when the aggregator has applied input want and
// appended its batch.
func watchAggregator(ctx context.Context, nd *node.Node, want uint64, start time.Time, at *atomic.Int64) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for nd.Runner.Status().LastIn < want {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		at.Store(int64(time.Since(start)))
	}()
	return done
}

func ingestRaw(b *testing.B, arena []byte, ends []int) {
	b.StopTimer()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nt := testutil.StartNATS(b)
	_, err := nt.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "RAW", Subjects: []string{"raw.>"}, Storage: jetstream.FileStorage})
	if err != nil {
		b.Fatal(err)
	}
	_, js := testutil.Connect(b, nt.URL()) // the producer's own connection, as for ferry
	n := len(ends)
	start, cpu0 := time.Now(), cpuTime()
	b.StartTimer()
	read := make(chan error, 1)
	go func() {
		_, err := rawRead(ctx, nt.JS, "RAW", uint64(n))
		read <- err
	}()
	w := newWindow(*flagWindow)
	for i := range n {
		from := 0
		if i > 0 {
			from = ends[i-1]
		}
		fut, err := js.PublishMsgAsync(natsMsg("raw.in.car.replicated", arena[from:ends[i]]))
		if err != nil {
			b.Fatal(err)
		}
		if err := w.add(ctx, fut); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.drain(ctx); err != nil {
		b.Fatal(err)
	}
	published := time.Since(start)
	if err := <-read; err != nil {
		b.Fatal(err)
	}
	done, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	b.ReportMetric(float64(n)/done.Seconds(), "events/s")
	b.ReportMetric(published.Seconds(), "publish-s")
	b.ReportMetric(done.Seconds(), "visible-s")
	b.ReportMetric(cpu.Seconds()*1e6/float64(n), "cpu-µs/event")
	b.StartTimer()
}
