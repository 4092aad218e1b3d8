package seen_test

import (
	"context"
	"flag"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/aggregator/seen"
)

var (
	benchKeys  = flag.Int("seen.keys", 1_000_000, "keys in the index of BenchmarkAccepted")
	benchEvery = flag.Int("seen.every", 65536, "puts between checkpoints while the index is built and put to")
)

// BenchmarkAccepted compares the seen index with the in-heap map it
// replaces (the baseline of the same run) at -seen.keys keys: a Get of a
// present key, a Get of an absent one, a Put of a new key, and a new CAR
// as the fold treats it (a Get that misses, then a Put). The index is built the way the fold
// builds it, by Puts with a checkpoint every -seen.every, each persisted
// by another goroutine as the runner's persister does; its Put includes
// those checkpoints and persists.
func BenchmarkAccepted(b *testing.B) {
	n := *benchKeys
	for _, impl := range []string{"map", "seen"} {
		b.Run("impl="+impl, func(b *testing.B) {
			acc, persist := newAccepted(b, impl)
			for i := range n {
				acc.Put(key(i), uint64(i))
				persist(i)
			}
			persist(-1)
			// -count repeats each op on the same set: the keys put are
			// new in every repeat.
			fresh := n + 1<<30
			b.Run("op=get-hit", func(b *testing.B) {
				defer reportCPU(b)()
				i := 0
				for b.Loop() {
					i = (i + 7919) % n
					if _, ok := acc.Get(key(i)); !ok {
						b.Fatal("a present key is absent")
					}
				}
			})
			b.Run("op=get-miss", func(b *testing.B) {
				defer reportCPU(b)()
				i := n
				for b.Loop() {
					i++
					if _, ok := acc.Get(key(i)); ok {
						b.Fatal("an absent key is present")
					}
				}
			})
			b.Run("op=put", func(b *testing.B) {
				defer reportCPU(b)()
				for b.Loop() {
					fresh++
					acc.Put(key(fresh), 1)
					persist(fresh)
				}
				persist(-1)
			})
			// A new CAR, as the fold treats it: a Get that misses, then
			// the Put of its decision.
			b.Run("op=new", func(b *testing.B) {
				defer reportCPU(b)()
				for b.Loop() {
					fresh++
					if _, ok := acc.Get(key(fresh)); ok {
						b.Fatal("a new key is present")
					}
					acc.Put(key(fresh), 1)
					persist(fresh)
				}
				persist(-1)
			})
		})
	}
}

// reportCPU reports the process's CPU time (every goroutine: the
// persister's too) per op, less noisy than wall time on a shared machine.
func reportCPU(b *testing.B) func() {
	start := cpuTime()
	return func() { b.ReportMetric(float64((cpuTime()-start).Nanoseconds())/float64(b.N), "cpu-ns/op") }
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// newAccepted returns an empty Accepted and a function to call after
// the i-th put, which checkpoints the seen index every -seen.every puts
// and hands the checkpoint to a persister goroutine; persist(-1) waits
// until every checkpoint is persisted.
func newAccepted(b *testing.B, impl string) (aggregator.Accepted, func(i int)) {
	if impl == "map" {
		return aggregator.MapAccepted{}, func(int) {}
	}
	ix := seen.New(b.TempDir())
	store := seen.DirStore(b.TempDir())
	b.Cleanup(func() { ix.Close() })
	queue := make(chan *seen.Frozen, 1024)
	done := make(chan struct{})
	start := func() {
		go func() {
			defer close(done)
			for f := range queue {
				if _, err := f.Persist(context.Background(), store); err != nil {
					b.Error(err)
				}
			}
		}()
	}
	start()
	return ix, func(i int) {
		switch {
		case i < 0:
			close(queue)
			<-done
			queue, done = make(chan *seen.Frozen, 1024), make(chan struct{})
			start()
		case i%*benchEvery == *benchEvery-1:
			queue <- ix.Checkpoint()
		}
	}
}
