package pack

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/internal/ipfstest"
	commp "github.com/filecoin-project/go-fil-commp-hashhash"
)

// The benchmark trees' sizes: the lines by default, small ones for
// bench.sh --smoke.
var (
	benchMiB   = flag.Int("pack.size", envInt("FERRY_BENCH_PACK_MIB", 1024), "MiB of BenchmarkPack's tree: one file of half of it, and size/1024×1000 files of 4 KiB–1 MiB")
	benchSmall = flag.Int("pack.small", envInt("FERRY_BENCH_PACK_SMALL", 100000), "1 KiB files of BenchmarkPackSmallFiles' tree")
	benchLarge = flag.Int("pack.rss-size", envInt("FERRY_BENCH_PACK_RSS_MIB", 4096), "MiB of BenchmarkPackRSS's larger tree, the shape of BenchmarkPack's (0: not measured)")
	benchJobs  = flag.Int("pack.jobs", 2, "CARs built at once (Local.Jobs, ferry pack --jobs)")
	benchCar   = flag.Int("pack.car-size", 0, "MiB per CAR (0: the default, 31 GiB), with shard size half of it")
	benchBin   = flag.String("pack.ferry-bin", os.Getenv("FERRY_BENCH_FERRY_BIN"), "ferry binary for BenchmarkPackRSS (default: go build ./cmd/ferry)")
)

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// benchTree is a generated source tree.
type benchTree struct {
	dir   string
	files []string // every file, in walk order
	bytes int64
}

var (
	benchMu    sync.Mutex
	benchTrees = map[string]*benchTree{}
	benchDirs  []string // removed when every benchmark is done
)

func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range benchDirs {
		os.RemoveAll(d)
	}
	os.Exit(code)
}

func benchTempDir(b *testing.B, pattern string) string {
	d, err := os.MkdirTemp("", pattern)
	if err != nil {
		b.Fatal(err)
	}
	benchMu.Lock()
	benchDirs = append(benchDirs, d)
	benchMu.Unlock()
	return d
}

// mixedTree is the tree of the throughput line at mib MiB, generated once
// per process: one file of mib/2 MiB (big.bin), and mib×1000/1024 files of
// 4 KiB–1 MiB in directories of 100, of deterministic pseudo-random
// content and sizes.
func mixedTree(b *testing.B, mib int) *benchTree {
	n := max(1, mib*1000/1024)
	return genTree(b, fmt.Sprintf("mixed-%d", mib), func(add func(name string, size int64)) {
		add("big.bin", int64(mib)<<19)
		sizes := ipfstest.Reader(uint64(mib), int64(8*n))
		var buf [8]byte
		for i := range n {
			io.ReadFull(sizes, buf[:])
			v := uint64(buf[0]) | uint64(buf[1])<<8 | uint64(buf[2])<<16 | uint64(buf[3])<<24
			add(fmt.Sprintf("d%03d/f%05d", i/100, i), 4<<10+int64(v%(1<<20-4<<10+1)))
		}
	})
}

// smallTree is n files of 1 KiB in directories of 1,000.
func smallTree(b *testing.B, n int) *benchTree {
	return genTree(b, fmt.Sprintf("small-%d", n), func(add func(name string, size int64)) {
		for i := range n {
			add(fmt.Sprintf("d%04d/f%07d", i/1000, i), 1<<10)
		}
	})
}

// genTree writes the files that shape names into a temp dir, once per
// process and key. Names must come in walk order.
func genTree(b *testing.B, key string, shape func(add func(name string, size int64))) *benchTree {
	benchMu.Lock()
	t, ok := benchTrees[key]
	benchMu.Unlock()
	if ok {
		return t
	}
	t = &benchTree{dir: benchTempDir(b, "ferry-pack-bench-src-*")}
	var seed uint64
	shape(func(name string, size int64) {
		p := filepath.Join(t.dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			b.Fatal(err)
		}
		f, err := os.Create(p)
		if err != nil {
			b.Fatal(err)
		}
		seed++
		if _, err := io.Copy(f, ipfstest.Reader(seed, size)); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
		t.files = append(t.files, p)
		t.bytes += size
	})
	benchMu.Lock()
	benchTrees[key] = t
	benchMu.Unlock()
	return t
}

func benchSettings(b *testing.B) Settings {
	car, shard := uint64(DefaultCarSize), uint64(DefaultShardSize)
	if *benchCar > 0 {
		car, shard = uint64(*benchCar)<<20, uint64(*benchCar)<<19
	}
	s, err := NewSettings(car, shard, false, nil, false)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// packOnce packs t into a fresh output directory, removed after, with the
// timer stopped around the removal.
func packOnce(b *testing.B, t *benchTree) *Summary {
	out := benchTempDir(b, "ferry-pack-bench-out-*")
	sum, err := Run(context.Background(), Options{
		Source: t.dir, Out: out, Settings: benchSettings(b), Builder: Local{Jobs: *benchJobs},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	os.RemoveAll(out)
	b.StartTimer()
	return sum
}

// BenchmarkPack is the pack line: BenchmarkPack/ferry is `ferry pack`'s
// engine (Run with Local{Jobs: -pack.jobs}, the default settings) over
// the -pack.size tree, which reads every file, builds its UnixFS DAG,
// writes and syncs the CARs, reads each CAR back for its CAR CID, md5 and
// piece, and writes the tree CAR and the manifest; BenchmarkPack/commp is
// go-fil-commp-hashhash alone over the same files' bytes, read in walk
// order in the same run: the baseline. Both report MB/s of source bytes
// and the process's CPU per source byte (cpu-ns/B).
func BenchmarkPack(b *testing.B) {
	t := mixedTree(b, *benchMiB)
	b.Run("ferry", func(b *testing.B) {
		b.SetBytes(t.bytes)
		defer reportCPU(b, t.bytes)()
		for range b.N {
			packOnce(b, t)
		}
	})
	b.Run("commp", func(b *testing.B) {
		b.SetBytes(t.bytes)
		buf := make([]byte, 32*256*127) // a multiple of commp's own buffer
		defer reportCPU(b, t.bytes)()
		for range b.N {
			var cp commp.Calc
			for _, name := range t.files {
				f, err := os.Open(name)
				if err != nil {
					b.Fatal(err)
				}
				_, err = io.CopyBuffer(&cp, f, buf)
				f.Close()
				if err != nil {
					b.Fatal(err)
				}
			}
			if _, _, err := cp.Digest(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkPackSmallFiles is the small-files line: Run over -pack.small
// files of 1 KiB, in files/s.
func BenchmarkPackSmallFiles(b *testing.B) {
	t := smallTree(b, *benchSmall)
	b.SetBytes(t.bytes)
	defer reportCPU(b, t.bytes)()
	for range b.N {
		packOnce(b, t)
	}
	b.ReportMetric(float64(len(t.files))*float64(b.N)/b.Elapsed().Seconds(), "files/s")
}

// BenchmarkPackRSS is the memory line: the peak resident memory
// (getrusage's ru_maxrss of the child) of a real `ferry pack --jobs
// -pack.jobs` process over BenchmarkPack's tree, a larger tree of the
// same shape (-pack.rss-size MiB, -pack.rss-size×1000/1024 files), and
// the small-files tree. It must stay under 200 MiB whatever the tree's
// size and grow with the number of files by no more than the records the
// manifest keeps. floor-RSS-MiB is this process's resident memory when the
// child started, below which peak-RSS-MiB cannot read (see lowerHighWater).
func BenchmarkPackRSS(b *testing.B) {
	bin := ferryBinary(b)
	trees := []struct {
		name string
		tree func() *benchTree
	}{
		{fmt.Sprintf("tree=%dMiB", *benchMiB), func() *benchTree { return mixedTree(b, *benchMiB) }},
		{fmt.Sprintf("tree=%dMiB", *benchLarge), func() *benchTree { return mixedTree(b, *benchLarge) }},
		{fmt.Sprintf("small=%d", *benchSmall), func() *benchTree { return smallTree(b, *benchSmall) }},
	}
	for i, tr := range trees {
		if i == 1 && (*benchLarge == 0 || *benchLarge == *benchMiB) {
			continue
		}
		b.Run(tr.name, func(b *testing.B) {
			t := tr.tree()
			b.SetBytes(t.bytes)
			var peak, floor int64
			for range b.N {
				out := benchTempDir(b, "ferry-pack-bench-out-*")
				floor = max(floor, lowerHighWater(b))
				cmd := exec.Command(bin, "pack", "--out", out, "--jobs", strconv.Itoa(*benchJobs), "--progress", "never", t.dir)
				if msg, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("ferry pack: %v\n%s", err, msg)
				}
				// ru_maxrss is in KiB on Linux.
				peak = max(peak, cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss)
				b.StopTimer()
				os.RemoveAll(out)
				b.StartTimer()
			}
			b.ReportMetric(float64(peak)/1024, "peak-RSS-MiB")
			b.ReportMetric(float64(floor)/1024, "floor-RSS-MiB")
			b.ReportMetric(float64(len(t.files))*float64(b.N)/b.Elapsed().Seconds(), "files/s")
		})
	}
}

// lowerHighWater makes this process's resident memory small and resets
// its high-water mark, and returns its resident KiB. A child's ru_maxrss
// starts from the high-water mark of the process that started it (Go
// starts children with vfork, sharing this process's memory until exec,
// and Linux carries the mark across exec), so without this every child
// would read as large as the benchmark process at its largest. A child's
// peak below the returned floor reads as the floor.
func lowerHighWater(b *testing.B) int64 {
	runtime.GC()
	debug.FreeOSMemory()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Fatalf("reset the RSS high-water mark: %v", err)
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kib
		}
	}
	b.Fatal("no VmHWM in /proc/self/status")
	return 0
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// ferryBinary is -pack.ferry-bin, or ./cmd/ferry built once per process.
func ferryBinary(b *testing.B) string {
	binOnce.Do(func() {
		if binPath = *benchBin; binPath != "" {
			return
		}
		binPath = filepath.Join(benchTempDir(b, "ferry-pack-bench-bin-*"), "ferry")
		msg, err := exec.Command("go", "build", "-o", binPath, "github.com/ferry-dev/ferry/cmd/ferry").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build ./cmd/ferry: %v\n%s", err, msg)
		}
	})
	if binErr != nil {
		b.Fatal(binErr)
	}
	return binPath
}

// reportCPU resets the timer and returns a func that reports the process
// CPU time (all threads) per source byte: steadier than MB/s on a shared
// machine.
func reportCPU(b *testing.B, size int64) func() {
	runtime.GC()
	start := cpuTime()
	b.ResetTimer()
	return func() {
		b.StopTimer()
		b.ReportMetric(float64(cpuTime()-start)/float64(int64(b.N)*size), "cpu-ns/B")
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
