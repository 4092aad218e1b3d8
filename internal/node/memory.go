package node

import (
	"context"
	"runtime"
	"runtime/debug"
	"time"
)

// Memory release after a burst.
//
// A burst of inputs (a backfill, a replay of history by a producer) grows
// the heap with transient buffers: NATS's block caches, bbolt's dirty
// pages, decoded batches. When the burst ends nothing allocates, so no
// garbage collection runs, the heap goal stays at its peak and the Go
// runtime keeps those pages resident (its forced collection comes only
// every two minutes, and the scavenger then returns memory slowly). So
// once the projection has been still for releaseIdle after applying at
// least releaseAfter batches (counted by the inputs they came from), the node collects and returns the free
// memory at once. A trickle of inputs never triggers it.
var (
	releaseIdle         = 10 * time.Second
	releaseAfter uint64 = 10_000
)

func (n *Node) releaseMemory(ctx context.Context) error {
	idle, after := releaseIdle, releaseAfter
	t := time.NewTicker(idle / 2)
	defer t.Stop()
	var (
		last      = n.Projector.LastIn()
		released  = last
		stillFrom = time.Now()
	)
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			seq := n.Projector.LastIn()
			if seq != last {
				last, stillFrom = seq, now
				continue
			}
			if seq-released >= after && now.Sub(stillFrom) >= idle {
				// Two collections: the first moves sync.Pool contents (NATS's
				// 8 MB block buffers, bbolt's pages) to the pools' victim
				// caches, the second frees them; then return the pages.
				runtime.GC()
				debug.FreeOSMemory()
				released = seq
				n.releases.Add(1)
				n.log.Debug("memory returned after a burst", "lastInput", seq)
			}
		}
	}
}
