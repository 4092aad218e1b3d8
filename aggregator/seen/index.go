package seen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
)

// memEntry is a key's last op since a checkpoint. below says whether an
// older layer (a frozen memtable or a run) holds the key, so a Delete of
// a key that only this memtable holds leaves no tombstone.
type memEntry struct {
	print uint64
	del   bool
	below bool
}

// Index is an exact, deterministic, disk-backed dedupe set (an
// aggregator.Accepted). Get, Put, Delete, Len and Checkpoint are called
// from one goroutine; Persist (and Close) from others.
type Index struct {
	dir string
	mem map[[16]byte]memEntry // the fold's goroutine only
	n   int                   // the fold's goroutine only
	buf []byte                // block scratch for the fold's lookups

	persist sync.Mutex // one Persist at a time

	mu     sync.RWMutex
	frozen []*Frozen // checkpoints not yet persisted, oldest first
	runs   []*run    // oldest first
}

// New returns the empty index; run files live in cacheDir.
func New(cacheDir string) *Index {
	return &Index{dir: cacheDir, mem: map[[16]byte]memEntry{}, buf: make([]byte, blockEntries*entrySize)}
}

// Get returns k's print and whether k is present. A run that cannot be
// read panics: the fold cannot decide without the answer, and guessing
// would change decisions.
func (ix *Index) Get(k [16]byte) (uint64, bool) {
	if e, ok := ix.mem[k]; ok {
		return e.print, !e.del
	}
	return ix.lower(&k)
}

// lower looks k up below the memtable.
func (ix *Index) lower(k *[16]byte) (uint64, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	for i := len(ix.frozen) - 1; i >= 0; i-- {
		if e, ok := ix.frozen[i].mem[*k]; ok {
			return e.print, !e.del
		}
	}
	for i := len(ix.runs) - 1; i >= 0; i-- {
		e, ok, err := ix.runs[i].get(k, ix.buf)
		if err != nil {
			panic(fmt.Sprintf("seen index lookup: %v", err))
		}
		if ok {
			return e.print, !e.tomb
		}
	}
	return 0, false
}

// Put inserts or overwrites k.
func (ix *Index) Put(k [16]byte, print uint64) {
	e, inMem := ix.mem[k]
	present := inMem && !e.del
	if !inMem {
		_, e.below = ix.lower(&k)
		present = e.below
	}
	if !present {
		ix.n++
	}
	ix.mem[k] = memEntry{print: print, below: e.below}
}

// Delete removes k; it is a no-op when k is absent.
func (ix *Index) Delete(k [16]byte) {
	e, inMem := ix.mem[k]
	if !inMem {
		if _, ok := ix.lower(&k); !ok {
			return
		}
		e = memEntry{below: true}
	} else if e.del {
		return
	}
	ix.n--
	if !e.below {
		delete(ix.mem, k)
		return
	}
	ix.mem[k] = memEntry{del: true, below: true}
}

// Len is the exact number of keys present.
func (ix *Index) Len() int { return ix.n }

// Frozen is the ops of one checkpoint, waiting to be persisted.
type Frozen struct {
	ix       *Index
	mem      map[[16]byte]memEntry
	count    int
	manifest Manifest // set once persisted
}

// Checkpoint freezes the ops since the last checkpoint; later ops go to a
// fresh memtable. Lookups see the frozen ops until Persist has made them
// runs. It costs O(1).
func (ix *Index) Checkpoint() *Frozen {
	f := &Frozen{ix: ix, mem: ix.mem, count: ix.n}
	ix.mem = map[[16]byte]memEntry{}
	ix.mu.Lock()
	ix.frozen = append(ix.frozen, f)
	ix.mu.Unlock()
	return f
}

// ErrOrder is returned by Persist for a checkpoint taken after one that is
// not persisted yet.
var ErrOrder = errors.New("seen: checkpoints must be persisted in the order they were taken")

// Persist writes the checkpoint's ops as runs in the index's cache
// directory (merging per the layout rule), puts every run store lacks
// and returns the manifest; then the index serves these ops from the
// runs. It is idempotent and may be retried after an error; an earlier
// checkpoint not yet persisted gives ErrOrder.
func (f *Frozen) Persist(ctx context.Context, store RunStore) (Manifest, error) {
	ix := f.ix
	ix.persist.Lock()
	defer ix.persist.Unlock()
	if f.manifest != nil {
		return f.manifest, nil
	}
	ix.mu.RLock()
	first := len(ix.frozen) > 0 && ix.frozen[0] == f
	old := ix.runs
	ix.mu.RUnlock()
	if !first {
		return nil, ErrOrder
	}
	runs, err := ix.layout(old, f.entries())
	if err != nil {
		return nil, err
	}
	if err := putRuns(ctx, store, runs); err != nil {
		closeNew(runs, old)
		return nil, err
	}
	m := encodeManifest(runs, f.count)
	ix.mu.Lock()
	ix.frozen = ix.frozen[1:]
	ix.runs = runs
	ix.mu.Unlock()
	dropOld(old, runs)
	f.manifest, f.mem = m, nil
	return m, nil
}

// entries returns the frozen ops as run entries, keys ascending.
func (f *Frozen) entries() []entry {
	es := make([]entry, 0, len(f.mem))
	for k, e := range f.mem {
		es = append(es, entry{key: k, print: e.print, tomb: e.del})
	}
	slices.SortFunc(es, func(a, b entry) int { return bytes.Compare(a.key[:], b.key[:]) })
	return es
}

// layout returns the runs after adding es to old: es becomes the newest
// run, then while the newest run has at least as many entries as the one
// before it, the two are merged (newer entries win); a merge that makes
// the oldest run drops tombstones. It decides from entry counts alone,
// which are a pure function of the ops and checkpoints.
func (ix *Index) layout(old []*run, es []entry) ([]*run, error) {
	if len(es) == 0 {
		return old, nil
	}
	w, err := newRunWriter(ix.dir, uint64(len(es)))
	if err != nil {
		return nil, err
	}
	for i := range es {
		if err := w.add(&es[i]); err != nil {
			return nil, w.abort(err)
		}
	}
	r, err := w.finish()
	if err != nil {
		return nil, err
	}
	runs := append(slices.Clip(old), r)
	for n := len(runs); n >= 2 && runs[n-1].count >= runs[n-2].count; n = len(runs) {
		m, err := merge(ix.dir, runs[n-2], runs[n-1], n == 2)
		if err != nil {
			closeNew(runs, old)
			return nil, err
		}
		for _, x := range runs[n-2:] {
			if !slices.Contains(old, x) {
				x.close()
				os.Remove(x.path)
			}
		}
		runs = append(runs[:n-2], m)
	}
	return runs, nil
}

// merge writes the union of older and newer, newer winning a key both
// hold; oldest drops tombstones (nothing older is left for them to hide).
func merge(dir string, older, newer *run, oldest bool) (*run, error) {
	w, err := newRunWriter(dir, older.count+newer.count)
	if err != nil {
		return nil, err
	}
	a, b := older.scan(), newer.scan()
	okA, okB := a.next(), b.next()
	for okA || okB {
		// The head is copied before next overwrites it.
		var e entry
		switch c := cmpScan(okA, okB, &a.e, &b.e); {
		case c < 0:
			e = a.e
			okA = a.next()
		case c > 0:
			e = b.e
			okB = b.next()
		default:
			e = b.e
			okA, okB = a.next(), b.next()
		}
		if e.tomb && oldest {
			continue
		}
		if err := w.add(&e); err != nil {
			return nil, w.abort(err)
		}
	}
	if err := errors.Join(a.err, b.err); err != nil {
		return nil, w.abort(fmt.Errorf("seen: merge: %w", err))
	}
	return w.finish()
}

// cmpScan orders the heads of two scans; an ended scan sorts last.
func cmpScan(okA, okB bool, a, b *entry) int {
	switch {
	case !okB:
		return -1
	case !okA:
		return 1
	}
	return bytes.Compare(a.key[:], b.key[:])
}

// closeNew closes and removes the runs in runs that old does not hold.
func closeNew(runs, old []*run) {
	for _, r := range runs {
		if !slices.Contains(old, r) {
			r.close()
			os.Remove(r.path)
		}
	}
}

// dropOld closes the runs of old that runs no longer holds and removes
// their files from the cache (the store keeps them for older manifests).
func dropOld(old, runs []*run) {
	for _, r := range old {
		if !slices.Contains(runs, r) {
			r.close()
			if !slices.ContainsFunc(runs, func(x *run) bool { return x.name == r.name }) {
				os.Remove(r.path)
			}
		}
	}
}

// Close closes the index's run files. The index is not usable after.
func (ix *Index) Close() error {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	var errs []error
	for _, r := range ix.runs {
		errs = append(errs, r.close())
	}
	ix.runs = nil
	return errors.Join(errs...)
}
