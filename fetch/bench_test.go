package fetch

import (
	"context"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/carstore"
	"github.com/ferry-dev/ferry/internal/ipfstest"
	commp "github.com/filecoin-project/go-fil-commp-hashhash"
	"github.com/ipfs/go-cid"
)

// benchMiB sizes the benchmark's DAG: -fetch.size=1024 (the line,
// the default) or FERRY_BENCH_FETCH_MIB; bench.sh --smoke uses a small one.
var benchMiB = flag.Int("fetch.size", envInt("FERRY_BENCH_FETCH_MIB", 1024), "benchmark DAG size in MiB")

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

type benchEnv struct {
	gw   *ipfstest.Gateway
	root cid.Cid
	dir  string // where the ferry run stores its CAR, the baseline reads it
}

var (
	benchOnce sync.Once
	bench     benchEnv
)

func setupBench(b *testing.B) *benchEnv {
	benchOnce.Do(func() {
		// The fixtures live until the process ends: both sub-benchmarks use
		// them. tb.Cleanup of the parent benchmark would close them between.
		tb := &keepTB{TB: b}
		s := ipfstest.NewStoreOn(ipfstest.NewFileBlockstore(tb))
		bench.root = s.FileFrom(tb, ipfstest.Reader(1, int64(*benchMiB)<<20), ipfstest.FileOptions{ChunkSize: 1 << 20, RawLeaves: true})
		bench.gw = ipfstest.NewGateway(tb, s)
		bench.dir = tb.TempDir()
	})
	return &bench
}

// keepTB is a TB whose cleanups wait for TestMain and whose temp dirs are
// made by hand: the benchmark's fixtures outlive each sub-benchmark.
type keepTB struct{ testing.TB }

// benchCleanups run when every test and benchmark is done.
var benchCleanups []func()

func (k *keepTB) Cleanup(f func()) { benchCleanups = append(benchCleanups, f) }
func (k *keepTB) TempDir() string {
	d, err := os.MkdirTemp("", "ferry-fetch-bench-*")
	if err != nil {
		k.Fatal(err)
	}
	k.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func TestMain(m *testing.M) {
	code := m.Run()
	for i := len(benchCleanups) - 1; i >= 0; i-- {
		benchCleanups[i]()
	}
	os.Exit(code)
}

// BenchmarkFetch is the fetch line: BenchmarkFetch/ferry fetches the DAG
// from boxo's gateway on loopback through verification (every block
// hashed, the DAG walked), the CAR CID, md5, commP and the spool file, and
// stores it; BenchmarkFetch/commp is go-fil-commp-hashhash alone over the
// same CAR's bytes, streamed from the stored file, in the same run;
// BenchmarkFetch/gateway is the gateway alone, its CAR read and dropped.
// Each reports MB/s of CAR bytes and process CPU per op; ferry also its
// peak heap (peak-heap-MiB), which must not grow with the DAG.
func BenchmarkFetch(b *testing.B) {
	e := setupBench(b)
	var carPath string
	b.Run("ferry", func(b *testing.B) {
		store, err := carstore.OpenDir(e.dir, "http://127.0.0.1:1/cars")
		if err != nil {
			b.Fatal(err)
		}
		f := New(Config{Gateways: []string{e.gw.URL}, Policy: loopback, Store: store, MaxSize: 64 << 30})
		runtime.GC()
		peak := watchHeap()
		defer reportCPU(b)()
		var size int64
		for i := range b.N {
			res, err := f.Fetch(context.Background(), Request{Root: e.root})
			if err != nil {
				b.Fatal(err)
			}
			size = int64(res.Size)
			carPath = filepath.Join(e.dir, carstore.Name(res.Car))
			if i < b.N-1 {
				os.Remove(carPath) // store it anew each time
			}
		}
		b.SetBytes(size)
		b.ReportMetric(float64(peak())/(1<<20), "peak-heap-MiB")
	})
	b.Run("gateway", func(b *testing.B) {
		// The source alone, read by a client that only discards: the
		// ceiling of the ferry run, which shares the cores with it.
		defer reportCPU(b)()
		var size int64
		for range b.N {
			req, _ := http.NewRequest(http.MethodGet, e.gw.URL+"/ipfs/"+e.root.String()+"?format=car", nil)
			req.Header.Set("Accept", carAccept)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			size, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil {
				b.Fatal(err)
			}
		}
		b.SetBytes(size)
	})
	b.Run("commp", func(b *testing.B) {
		if carPath == "" {
			b.Skip("no CAR: the ferry run did not store one")
		}
		fi, err := os.Stat(carPath)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(fi.Size())
		buf := make([]byte, 32*256*127) // a multiple of commp's own buffer
		defer reportCPU(b)()
		for range b.N {
			f, err := os.Open(carPath)
			if err != nil {
				b.Fatal(err)
			}
			var cp commp.Calc
			if _, err := io.CopyBuffer(&cp, f, buf); err != nil {
				b.Fatal(err)
			}
			f.Close()
			if _, _, err := cp.Digest(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// watchHeap samples the live heap every few milliseconds until the
// returned func is called, which gives the peak in bytes.
func watchHeap() func() uint64 {
	stop, done := make(chan struct{}), make(chan uint64)
	go func() {
		sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		var peak uint64
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(sample)
			peak = max(peak, sample[0].Value.Uint64())
			select {
			case <-stop:
				done <- peak
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 { close(stop); return <-done }
}

// reportCPU resets the timer and returns a func that reports the process
// CPU time per byte of b.SetBytes: steadier than MB/s on a shared machine.
func reportCPU(b *testing.B) func() {
	start := cpuTime()
	b.ResetTimer()
	return func() {
		b.StopTimer()
		b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
