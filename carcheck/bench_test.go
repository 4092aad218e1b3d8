package carcheck

import (
	"bytes"
	"crypto/md5"
	"flag"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	commp "github.com/filecoin-project/go-fil-commp-hashhash"
	"github.com/ipfs/go-cid"
)

// benchMiB sizes the benchmark CARs: -piece.size=8 (or FERRY_BENCH_MIB=8)
// for a CI smoke run; 64 MiB by default.
var benchMiB = flag.Int("piece.size", envInt("FERRY_BENCH_MIB", 64), "benchmark CAR size in MiB")

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

var (
	benchMu   sync.Mutex
	benchCARs = map[int][]byte{}
)

// benchCAR is the seeded CAR number i of -piece.size MiB, built once: raw
// sha2-256 blocks of 256 KiB, the shape of a UnixFS import with raw leaves.
func benchCAR(b *testing.B, i int) []byte {
	b.Helper()
	benchMu.Lock()
	defer benchMu.Unlock()
	if data, ok := benchCARs[i]; ok {
		return data
	}
	size := *benchMiB << 20
	blocks := make([]testBlock, 0, size/(256<<10)+1)
	for seed, total := int64(i)<<32, 0; total < size; seed++ {
		data := make([]byte, min(256<<10, size-total))
		fillSeeded(data, seed)
		c, err := blockPrefixes[0].Sum(data)
		if err != nil {
			b.Fatal(err)
		}
		blocks = append(blocks, testBlock{c, data})
		total += len(data)
	}
	data := writeCARv1(b, []cid.Cid{blocks[0].c}, blocks)
	benchCARs[i] = data
	return data
}

// fillSeeded fills p with cheap deterministic bytes (xorshift).
func fillSeeded(p []byte, seed int64) {
	x := uint64(seed)*0x9e3779b97f4a7c15 | 1
	for i := range p {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		p[i] = byte(x)
	}
}

// BenchmarkCommPBare is go-fil-commp-hashhash alone: the ceiling Check is
// measured against.
func BenchmarkCommPBare(b *testing.B) {
	data := benchCAR(b, 0)
	b.SetBytes(int64(len(data)))
	defer reportCPU(b, len(data))()
	for range b.N {
		bareCommP(b, data)
	}
}

// reportCPU resets the timer and returns a func that reports the process
// CPU time (all threads) per byte: unlike MB/s it holds steady when other
// work shares the machine, and it bounds what two cores can do.
func reportCPU(b *testing.B, size int) func() {
	start := cpuTime()
	b.ResetTimer()
	return func() {
		b.StopTimer()
		b.ReportMetric(float64(cpuTime()-start)/float64(b.N*size), "cpu-ns/B")
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func bareCommP(b *testing.B, data []byte) {
	var cp commp.Calc
	cp.Write(data)
	if _, _, err := cp.Digest(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkCheck is the full pass: CAR verification, md5 and commP.
func BenchmarkCheck(b *testing.B) {
	data := benchCAR(b, 0)
	b.SetBytes(int64(len(data)))
	defer reportCPU(b, len(data))()
	for range b.N {
		if _, err := Check(bytes.NewReader(data), CheckOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkScanOnly and BenchmarkMD5Only price the parts Check adds to
// commP, each on one core.
func BenchmarkScanOnly(b *testing.B) {
	data := benchCAR(b, 0)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for range b.N {
		s := newScanner()
		for rest := data; len(rest) > 0; rest = rest[min(len(rest), chunkSize):] {
			if err := s.write(rest[:min(len(rest), chunkSize)]); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkMD5Only(b *testing.B) {
	data := benchCAR(b, 0)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for range b.N {
		md5.Sum(data)
	}
}

// BenchmarkCheckParallel1 and 2 run one and two Checks at once, each on
// its own CAR, to measure how a piece worker scales on two cores; the
// CommPBareParallel pair gives the same for commP alone.
func BenchmarkCheckParallel1(b *testing.B)     { benchParallel(b, 1, checkOne) }
func BenchmarkCheckParallel2(b *testing.B)     { benchParallel(b, 2, checkOne) }
func BenchmarkCommPBareParallel1(b *testing.B) { benchParallel(b, 1, bareCommP) }
func BenchmarkCommPBareParallel2(b *testing.B) { benchParallel(b, 2, bareCommP) }

func checkOne(b *testing.B, data []byte) {
	if _, err := Check(bytes.NewReader(data), CheckOptions{}); err != nil {
		b.Error(err)
	}
}

func benchParallel(b *testing.B, workers int, run func(*testing.B, []byte)) {
	cars := make([][]byte, workers)
	for i := range cars {
		cars[i] = benchCAR(b, i)
	}
	b.SetBytes(int64(workers * len(cars[0])))
	defer reportCPU(b, workers*len(cars[0]))()
	for range b.N {
		var wg sync.WaitGroup
		for _, data := range cars {
			wg.Go(func() { run(b, data) })
		}
		wg.Wait()
	}
}
