package seen

import (
	"context"
	"fmt"
	"iter"
)

// Build writes entries (keys strictly ascending, n of them) as the one
// run of an index into cacheDir, puts it into store unless store is nil,
// and returns the manifest. It is the index of a log whose every accepted
// CAR has been merged into the oldest run; synthetic histories
// (benchmarks) are made with it without folding n inputs.
func Build(ctx context.Context, store RunStore, cacheDir string, n uint64, entries iter.Seq2[[16]byte, uint64]) (Manifest, error) {
	w, err := newRunWriter(cacheDir, n)
	if err != nil {
		return nil, err
	}
	var e entry
	for e.key, e.print = range entries {
		if err := w.add(&e); err != nil {
			return nil, w.abort(err)
		}
		if w.count%(1<<20) == 0 && ctx.Err() != nil {
			return nil, w.abort(ctx.Err())
		}
	}
	if w.count != n {
		return nil, w.abort(fmt.Errorf("seen: build: %d entries, %d announced", w.count, n))
	}
	r, err := w.finish()
	if err != nil {
		return nil, err
	}
	defer r.close()
	runs := []*run{r}
	if err := putRuns(ctx, store, runs); err != nil {
		return nil, err
	}
	return encodeManifest(runs, int(n)), nil
}
