package bench

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/projections"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Scale. Each flag falls back to an environment variable so scripts/bench.sh
// and CI can set it without knowing the flag; the defaults are a smoke run.
var (
	flagCars    = flag.Int("ferry.cars", envInt("FERRY_BENCH_CARS", 10000), "car.replicated events per scenario (full scale: 1000000)")
	flagDeal    = flag.Uint64("ferry.deal", uint64(envInt("FERRY_BENCH_DEAL", 32<<30)), "padded deal size, bytes")
	flagMinMiB  = flag.Int("ferry.car-min-mib", envInt("FERRY_BENCH_CAR_MIN_MIB", 1), "smallest CAR, MiB")
	flagMaxMiB  = flag.Int("ferry.car-max-mib", envInt("FERRY_BENCH_CAR_MAX_MIB", 4), "largest CAR, MiB")
	flagWindow  = flag.Int("ferry.window", envInt("FERRY_BENCH_WINDOW", 2048), "async publishes in flight (ferry and baseline alike)")
	flagHeap    = flag.String("ferry.heapprofile", os.Getenv("FERRY_BENCH_HEAPPROFILE"), "write a heap profile `file` after the ingest, with the node still up")
	flagDedup   = flag.Duration("ferry.dedup-window", envDuration("FERRY_BENCH_DEDUP_WINDOW", jetlog.DefaultDuplicates), "the input log's message id window in the ferry ingest (ferry serve --dedup-window)")
	flagSamples = flag.Int("ferry.verify", envInt("FERRY_BENCH_VERIFY", 500), "CARs checked in the read models after each scenario")
)

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// envFloat reads a number that may be 0 (to switch a part off).
func envFloat(name string, def float64) float64 {
	if f, err := strconv.ParseFloat(os.Getenv(name), 64); err == nil && f >= 0 {
		return f
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}

// fleet is the CARs of a scenario: n deterministic car.replicated events
// of 1–4 MiB CARs with fake piece commitments (ingest does not fetch
// bytes). The costly strings are made once, outside the timed part; the
// event structs are made as they are published.
//
// The strings are packed (strtab), not kept as 3n separate strings: the
// fleet lives in the measured process's heap for the whole run, where a
// producer's events would not, and as 3n pointers every garbage
// collection of the node under test traced all of them.
type fleet struct {
	cars, md5s, pieces strtab
	sizes              []uint64
}

func (f *fleet) len() int           { return len(f.sizes) }
func (f *fleet) car(i int) string   { return f.cars.at(i) }
func (f *fleet) piece(i int) string { return f.pieces.at(i) }

// strtab is n strings in one: at(i) is a substring of all, so the table
// holds one pointer however many strings it has.
type strtab struct {
	all  string
	ends []int
}

func packStrings(ss []string) strtab {
	var b strings.Builder
	n := 0
	for _, s := range ss {
		n += len(s)
	}
	b.Grow(n)
	ends := make([]int, len(ss))
	for i, s := range ss {
		b.WriteString(s)
		ends[i] = b.Len()
	}
	return strtab{all: b.String(), ends: ends}
}

func (t strtab) at(i int) string {
	from := 0
	if i > 0 {
		from = t.ends[i-1]
	}
	return t.all[from:t.ends[i]]
}

var (
	fleetMu    sync.Mutex
	fleetCache = map[int]*fleet{}
)

// fleetOf returns the fleet of n CARs, built once per process.
func fleetOf(tb testing.TB, n int) *fleet {
	tb.Helper()
	fleetMu.Lock()
	defer fleetMu.Unlock()
	if f, ok := fleetCache[n]; ok {
		return f
	}
	lo, hi := uint64(*flagMinMiB)<<20, uint64(*flagMaxMiB)<<20
	if lo < 1 || hi < lo {
		tb.Fatalf("CAR sizes %d..%d MiB", *flagMinMiB, *flagMaxMiB)
	}
	cars, md5s, pieces := make([]string, n), make([]string, n), make([]string, n)
	f := &fleet{sizes: make([]uint64, n)}
	rng := rand.New(rand.NewPCG(uint64(n), 58))
	for i := range f.sizes {
		f.sizes[i] = lo + rng.Uint64N(hi-lo+1)
	}
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				c := testutil.CarCID(i).String()
				sum := md5.Sum([]byte(c))
				cars[i], md5s[i] = c, hex.EncodeToString(sum[:])
				pieces[i] = testutil.FakePiece(i, f.sizes[i]).MustV2().String()
			}
		})
	}
	wg.Wait()
	f.cars, f.md5s, f.pieces = packStrings(cars), packStrings(md5s), packStrings(pieces)
	fleetCache[n] = f
	return f
}

// event is the car.replicated of CAR i, the shape testutil.Replicated
// makes.
func (f *fleet) event(i int) *events.CarReplicated {
	c := f.car(i)
	return &events.CarReplicated{Car: c, Size: f.sizes[i], MD5: f.md5s.at(i),
		URLs:         []string{"https://carpark.example/" + c + "/" + c + ".car"},
		ReplicatedAt: "2026-11-22T12:00:00Z", Piece: f.piece(i)}
}

// encoded is every event of the fleet as ferry encodes it, in one arena:
// the baseline publishes these bytes, so its messages have exactly the
// sizes of ferry's.
func (f *fleet) encoded(tb testing.TB) (arena []byte, ends []int) {
	tb.Helper()
	ends = make([]int, f.len())
	for i := range ends {
		data, err := events.Encode(f.event(i))
		if err != nil {
			tb.Fatal(err)
		}
		arena = append(arena, data...)
		ends[i] = len(arena)
	}
	return arena, ends
}

// window keeps up to size async publishes in flight: ferry's publisher and
// the baseline's go through the same one.
type window struct {
	futs []jetstream.PubAckFuture
	next int
}

func newWindow(size int) *window { return &window{futs: make([]jetstream.PubAckFuture, max(size, 1))} }

// add waits for the oldest publish once the window is full, then adds f.
func (w *window) add(ctx context.Context, f jetstream.PubAckFuture) error {
	slot := w.next % len(w.futs)
	if old := w.futs[slot]; old != nil {
		if err := waitFuture(ctx, old); err != nil {
			return err
		}
	}
	w.futs[slot] = f
	w.next++
	return nil
}

// drain waits for every publish in flight.
func (w *window) drain(ctx context.Context) error {
	for i, f := range w.futs {
		if f == nil {
			continue
		}
		if err := waitFuture(ctx, f); err != nil {
			return err
		}
		w.futs[i] = nil
	}
	return nil
}

func waitFuture(ctx context.Context, f jetstream.PubAckFuture) error {
	select {
	case <-f.Ok():
		return nil
	case err := <-f.Err():
		return fmt.Errorf("publish %q: %w", f.Msg().Subject, err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// publishFleet publishes the first n events of f through ferry's
// jetlog.Publisher, window in flight.
func publishFleet(ctx context.Context, js jetstream.JetStream, f *fleet, n int) error {
	pub := jetlog.NewPublisher(js, jetlog.DefaultSubjects)
	w := newWindow(*flagWindow)
	for i := range n {
		fut, err := pub.PublishAsync(f.event(i))
		if err != nil {
			return fmt.Errorf("publish %d: %w", i, err)
		}
		if err := w.add(ctx, fut); err != nil {
			return err
		}
	}
	return w.drain(ctx)
}

// foldConfig is the aggregator configuration of every scenario: the deal
// size of -ferry.deal, Spade's lower bound, no ticks.
func foldConfig() events.Settings {
	return events.Settings{DealSize: *flagDeal, MinPayload: aggregator.DefaultMinPayload(*flagDeal), MaxWait: 4 * time.Hour}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// verifyStore checks a sample of the fleet's first n CARs in the read
// models: each is AGGREGATING or READY in an aggregate, with its piece.
func verifyStore(tb testing.TB, store *projections.Store, f *fleet, n int) {
	tb.Helper()
	rng := rand.New(rand.NewPCG(7, uint64(n)))
	for k := range min(n, *flagSamples) {
		i := rng.IntN(n)
		if k == 0 {
			i = n - 1 // the last one in is the one most likely missing
		}
		c, err := store.Car(f.car(i))
		if err != nil {
			tb.Fatalf("CAR %d %s: %v", i, f.car(i), err)
		}
		if c.Piece != f.piece(i) || c.Aggregate == 0 || (c.State != aggregator.Aggregating && c.State != aggregator.Ready) {
			tb.Fatalf("CAR %d: state %s aggregate %d piece %s, want AGGREGATING or READY with piece %s",
				i, c.State, c.Aggregate, c.Piece, f.piece(i))
		}
		if c.State == aggregator.Ready && c.Inclusion == nil {
			tb.Fatalf("CAR %d is READY without an inclusion proof", i)
		}
	}
}

// streamLast is the last sequence of a stream.
func streamLast(ctx context.Context, tb testing.TB, js jetstream.JetStream, name string) uint64 {
	tb.Helper()
	st, err := js.Stream(ctx, name)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	return info.State.LastSeq
}

// rawRead reads stream from its start with an ordered consumer until it
// has count messages, touching every body; it returns the bytes read.
func rawRead(ctx context.Context, js jetstream.JetStream, stream string, count uint64) (int, error) {
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return 0, err
	}
	it, err := cons.Messages(jetlog.PullOpt(stream))
	if err != nil {
		return 0, err
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	var bytes int
	for got := uint64(0); got < count; got++ {
		msg, err := it.Next()
		if err != nil {
			return bytes, fmt.Errorf("after %d of %d messages: %w", got, count, err)
		}
		bytes += len(msg.Data())
	}
	return bytes, nil
}

// reportMem reports this process's memory.
func reportMem(b *testing.B, prefix string) {
	m, err := ReadMem(0)
	if err != nil {
		b.Logf("memory not reported: %v", err)
		return
	}
	b.ReportMetric(MiB(m.HWM), prefix+"MiB-hwm")
}

// natsMsg is a plain message on subject with data.
func natsMsg(subject string, data []byte) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = data
	return m
}

// cpuTime is the CPU time, user and system, this process has used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startCPUProfile profiles this process's CPU into path until the returned
// function is called; with path empty it does nothing.
func startCPUProfile(b *testing.B, path string) (stop func()) {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// writeHeapProfile writes the live heap to -ferry.heapprofile, if set.
func writeHeapProfile(tb testing.TB) {
	tb.Helper()
	if *flagHeap == "" {
		return
	}
	runtime.GC()
	f, err := os.Create(*flagHeap)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		tb.Fatal(err)
	}
}
