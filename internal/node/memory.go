package node

import (
	"context"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/ferry-dev/ferry/jetlog"
)

// Memory release after a burst.
//
// A burst of inputs (a backfill, a replay of history by a producer) grows
// the heap with transient buffers: NATS's block caches, bbolt's dirty
// pages, decoded batches, and the input log's message ids, which NATS keeps
// for its duplicate window (~200 bytes each: 60 MB for 10 s at 30,000
// inputs/s). When the burst ends nothing allocates, so no garbage
// collection runs, the heap goal stays at its peak and the Go runtime keeps
// those pages resident (its forced collection comes only every two
// minutes, and the scavenger then returns memory slowly). So once the
// projection has been still for releaseIdle after applying at least
// releaseAfter batches (counted by the inputs they came from), the node
// collects and returns the free memory at once, and again once the
// duplicate window has passed as well and NATS has dropped the burst's
// ids. A trickle of inputs never triggers it.
//
// A memory limit (debug.SetMemoryLimit, GOMEMLIMIT) is no substitute: the
// runtime collects and scavenges against it only as the process nears
// it, so after a burst the memory stays just under the limit instead of
// going back to what the node holds when still (docs/benchmarks.md has
// the A/B). An operator may still set GOMEMLIMIT as a ceiling.
var (
	releaseIdle         = 10 * time.Second
	releaseAfter uint64 = 10_000
)

func (n *Node) releaseMemory(ctx context.Context) error {
	after := releaseAfter
	// The stillness each release of a burst waits for, in order.
	stages := []time.Duration{releaseIdle}
	window := n.cfg.Duplicates
	if window <= 0 {
		window = jetlog.DefaultDuplicates
	}
	if w := window + releaseIdle/2; w > releaseIdle {
		stages = append(stages, w)
	}
	t := time.NewTicker(releaseIdle / 2)
	defer t.Stop()
	var (
		last      = n.Projector.LastIn()
		released  = last
		stage     = 0
		stillFrom = time.Now()
	)
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			seq := n.Projector.LastIn()
			if seq != last {
				last, stillFrom, stage = seq, now, 0
				continue
			}
			if seq-released >= after && stage < len(stages) && now.Sub(stillFrom) >= stages[stage] {
				// Two collections: the first moves sync.Pool contents (NATS's
				// 8 MB block buffers, bbolt's pages) to the pools' victim
				// caches, the second frees them; then return the pages.
				runtime.GC()
				debug.FreeOSMemory()
				n.releases.Add(1)
				n.log.Debug("memory returned after a burst", "lastInput", seq, "stillFor", now.Sub(stillFrom).Round(time.Second))
				if stage++; stage == len(stages) {
					released = seq
				}
			}
		}
	}
}
