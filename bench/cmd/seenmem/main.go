// Command seenmem measures the memory of the fold's dedupe set with a
// long history: the resident memory (VmRSS, VmHWM) of a process that
// holds an index of -keys CARs and serves lookups (and, with -fold, folds
// new CARs through an aggregator.State on it), against the in-heap map
// the index replaces.
//
// The history is synthetic: -build writes its one run directly
// (seen.Build), keys ascending, instead of folding -keys inputs; keys are
// spread evenly over the key space, as cidtext.Key's SHA-256 prefixes
// are. Measure in a process that did not build:
//
//	seenmem -build -keys 100000000 -dir /var/tmp/seen100m
//	seenmem -impl seen -keys 100000000 -dir /var/tmp/seen100m -lookups 2000000 -fold 200000
//	seenmem -impl map -keys 10000000 -lookups 2000000
//
// Every lookup is checked against the generator: a present key must
// answer its print, an absent one must be absent. Output lines have the
// shape of Go benchmarks, for benchstat.
package main

import (
	"context"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"iter"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/aggregator/seen"
	"github.com/ferry-dev/ferry/bench"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "seenmem:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		build   = flag.Bool("build", false, "write the synthetic index of -keys keys into -dir and exit")
		impl    = flag.String("impl", "seen", "seen (the index in -dir) or map (the in-heap map, filled here)")
		keys    = flag.Uint64("keys", 1_000_000, "keys of history")
		dir     = flag.String("dir", "", "the index's directory: manifest, cache/")
		lookups = flag.Int("lookups", 1_000_000, "random lookups, half of present keys")
		fold    = flag.Int("fold", 0, "new CARs folded through an aggregator.State on the dedupe set, checkpointed every 65,536")
		profile = flag.String("cpuprofile", "", "write a CPU profile of the lookups and the fold to `file`")
	)
	flag.Parse()
	ctx := context.Background()
	if *build {
		return buildIndex(ctx, *dir, *keys)
	}
	start := time.Now()
	var acc aggregator.Accepted
	var ix *seen.Index
	switch *impl {
	case "seen":
		m, err := os.ReadFile(filepath.Join(*dir, "manifest"))
		if err != nil {
			return err
		}
		cache := filepath.Join(*dir, "cache")
		if ix, err = seen.Open(ctx, m, seen.DirStore(cache), cache); err != nil {
			return err
		}
		acc = ix
	case "map":
		m := make(aggregator.MapAccepted)
		for k, p := range history(*keys) {
			m[k] = p
		}
		acc = m
	default:
		return fmt.Errorf("-impl %q", *impl)
	}
	if got := uint64(acc.Len()); got != *keys {
		return fmt.Errorf("the dedupe set holds %d keys, want %d", got, *keys)
	}
	loaded := time.Since(start)
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var t timings
	var err error
	cpu0 := cpuNow()
	if t.lookup, err = lookup(acc, *keys, *lookups); err != nil {
		return err
	}
	cpu1 := cpuNow()
	t.lookupCPU = (cpu1 - cpu0) / time.Duration(max(*lookups, 1))
	var st *aggregator.State
	if *fold > 0 {
		if st, t.fold, err = foldNew(ctx, acc, ix, *dir, *fold); err != nil {
			return err
		}
		t.foldCPU = (cpuNow() - cpu1) / time.Duration(*fold)
	}
	err = report(*impl, *keys, *fold, loaded, t, *dir)
	// What is measured is a process that holds the set (and the state).
	runtime.KeepAlive(acc)
	runtime.KeepAlive(st)
	return err
}

// key is the i-th of n keys of the synthetic history: the key space cut
// into n even slots, key i at a pseudo-random place in slot i, so keys
// ascend with i.
func key(i, n uint64) [16]byte {
	step := ^uint64(0) / n
	var k [16]byte
	binary.BigEndian.PutUint64(k[:8], i*step+mix(i)%step)
	binary.BigEndian.PutUint64(k[8:], mix(i^0x5eed))
	return k
}

// slot is the i whose slot k falls in.
func slot(k [16]byte, n uint64) uint64 { return binary.BigEndian.Uint64(k[:8]) / (^uint64(0) / n) }

func print(i uint64) uint64 { return mix(i + 1<<62) }

func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

func history(n uint64) iter.Seq2[[16]byte, uint64] {
	return func(yield func([16]byte, uint64) bool) {
		for i := range n {
			if !yield(key(i, n), print(i)) {
				return
			}
		}
	}
}

func buildIndex(ctx context.Context, dir string, n uint64) error {
	cache := filepath.Join(dir, "cache")
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return err
	}
	start := time.Now()
	m, err := seen.Build(ctx, nil, cache, n, history(n))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest"), m, 0o644); err != nil {
		return err
	}
	fmt.Printf("built %d keys in %.1f s\n", n, time.Since(start).Seconds())
	return nil
}

// lookup makes count random lookups, half of present keys, checks each
// answer against the generator and returns the mean time of one.
func lookup(acc aggregator.Accepted, n uint64, count int) (time.Duration, error) {
	r := rand.New(rand.NewPCG(n, 19))
	start := time.Now()
	for j := range count {
		if j%2 == 0 {
			i := r.Uint64N(n)
			if p, ok := acc.Get(key(i, n)); !ok || p != print(i) {
				return 0, fmt.Errorf("key %d of the history: got %d,%v, want %d", i, p, ok, print(i))
			}
			continue
		}
		var k [16]byte
		binary.BigEndian.PutUint64(k[:8], r.Uint64())
		binary.BigEndian.PutUint64(k[8:], r.Uint64())
		_, ok := acc.Get(k)
		if i := slot(k, n); ok != (i < n && key(i, n) == k) {
			return 0, fmt.Errorf("random key %x: present = %v", k, ok)
		}
	}
	return time.Since(start) / time.Duration(max(count, 1)), nil
}

// foldNew folds count car.replicated inputs of new CARs (with pieces)
// through a State on acc; for the seen index it checkpoints every 65,536
// inputs and persists in another goroutine, as the runner's persister
// does, into a store that holds the history's runs.
func foldNew(ctx context.Context, acc aggregator.Accepted, ix *seen.Index, dir string, count int) (*aggregator.State, time.Duration, error) {
	const deal = 32 << 30
	st := aggregator.NewWith(events.Settings{DealSize: deal, MinPayload: aggregator.DefaultMinPayload(deal), MaxWait: 4 * time.Hour}, acc)
	before := acc.Len()
	queue := make(chan *seen.Frozen, 64)
	done := make(chan error, 1)
	// The store is the cache itself, so the history's runs are in the
	// store already, as they are when a snapshot's index is opened.
	store := seen.DirStore(filepath.Join(dir, "cache"))
	go func() {
		var err error
		for f := range queue {
			if err == nil {
				_, err = f.Persist(ctx, store)
			}
		}
		done <- err
	}()
	start := time.Now()
	for i := range count {
		c := testutil.CarCID(1<<40 + i).String()
		sum := md5.Sum([]byte(c))
		size := uint64(1<<20 + i%(16<<20))
		data, err := events.Encode(&events.CarReplicated{Car: c, Size: size, MD5: hex.EncodeToString(sum[:]),
			URLs: []string{"https://carpark.example/" + c + ".car"}, ReplicatedAt: "2026-11-22T12:00:00Z",
			Piece: testutil.FakePiece(i, size).MustV2().String()})
		if err != nil {
			return nil, 0, err
		}
		b := st.Apply(uint64(i+1), data)
		if len(b.Decisions) == 0 || (b.Decisions[len(b.Decisions)-1].Type != events.DecCarAdded && b.Decisions[len(b.Decisions)-1].Type != events.DecAggReady) {
			return nil, 0, fmt.Errorf("input %d was not added: %+v", i, b.Decisions)
		}
		if ix != nil && i%65536 == 65535 {
			queue <- ix.Checkpoint()
		}
	}
	took := time.Since(start)
	close(queue)
	if err := <-done; err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, 0, err
	}
	if got := acc.Len(); got != before+count {
		return nil, 0, fmt.Errorf("after folding %d new CARs the set holds %d keys, want %d", count, got, before+count)
	}
	return st, took / time.Duration(count), nil
}

// timings are the wall and CPU (this process, every thread) time of one
// lookup and of one folded input.
type timings struct{ lookup, lookupCPU, fold, foldCPU time.Duration }

func cpuNow() time.Duration {
	d, err := bench.ProcCPU(os.Getpid())
	if err != nil {
		panic(err)
	}
	return d
}

func report(impl string, n uint64, fold int, loaded time.Duration, t timings, dir string) error {
	runtime.GC()
	mem, err := bench.ReadMem(0)
	if err != nil {
		return err
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("BenchmarkSeenMemory/impl=%s/keys=%d/fold=%d 1 %d ns/lookup %d cpu-ns/lookup %.1f MiB-rss %.1f MiB-hwm %.1f MiB-anon %.1f MiB-file %.1f MiB-heap %.2f s-load",
		impl, n, fold, t.lookup.Nanoseconds(), t.lookupCPU.Nanoseconds(), bench.MiB(mem.RSS), bench.MiB(mem.HWM), bench.MiB(mem.Anon), bench.MiB(mem.File),
		bench.MiB(ms.HeapInuse), loaded.Seconds())
	if fold > 0 {
		fmt.Printf(" %d ns/fold %d cpu-ns/fold", t.fold.Nanoseconds(), t.foldCPU.Nanoseconds())
	}
	if impl == "seen" {
		fmt.Printf(" %.1f MiB-disk", bench.MiB(bench.DirSize(filepath.Join(dir, "cache"))))
	}
	fmt.Println()
	return nil
}
