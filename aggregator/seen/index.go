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

// memtable is the ops since a checkpoint: the keys put, with their
// prints, and the keys deleted that an older layer (a frozen memtable or
// a run) holds, which become tombstones. A key deleted that no older
// layer holds just leaves puts. Two plain maps keep it as small per key
// as the in-heap map the index replaces.
type memtable struct {
	puts  map[[16]byte]uint64
	tombs map[[16]byte]struct{}
}

func newMemtable() memtable {
	return memtable{puts: map[[16]byte]uint64{}, tombs: map[[16]byte]struct{}{}}
}

// get says what the memtable knows of k: present with a print, deleted,
// or nothing (known false).
func (m *memtable) get(k *[16]byte) (print uint64, present, known bool) {
	if p, ok := m.puts[*k]; ok {
		return p, true, true
	}
	if _, ok := m.tombs[*k]; ok {
		return 0, false, true
	}
	return 0, false, false
}

// Index is an exact, deterministic, disk-backed dedupe set (an
// aggregator.Accepted). Get, Put, Delete, Len and Checkpoint are called
// from one goroutine; Persist (and Close) from others.
type Index struct {
	dir string
	mem memtable // the fold's goroutine only
	n   int      // the fold's goroutine only
	buf []byte   // block scratch for the fold's lookups
	// last is the last answer from below the memtable (the fold's
	// goroutine only). What lies below changes only at a checkpoint
	// (Persist moves ops between layers without changing any answer), so
	// the Put that follows the fold's Get of a new CAR reuses it.
	last struct {
		key     [16]byte
		print   uint64
		present bool
		valid   bool
	}

	persist sync.Mutex // one Persist at a time

	mu     sync.RWMutex
	frozen []*Frozen // checkpoints not yet persisted, oldest first
	runs   []*run    // oldest first
}

// New returns the empty index; run files live in cacheDir.
func New(cacheDir string) *Index {
	return &Index{dir: cacheDir, mem: newMemtable(), buf: make([]byte, blockEntries*entrySize)}
}

// Get returns k's print and whether k is present. A run that cannot be
// read panics: the fold cannot decide without the answer, and guessing
// would change decisions.
func (ix *Index) Get(k [16]byte) (uint64, bool) {
	if p, present, known := ix.mem.get(&k); known {
		return p, present
	}
	return ix.lower(&k)
}

// lower looks k up below the memtable.
func (ix *Index) lower(k *[16]byte) (uint64, bool) {
	if ix.last.valid && ix.last.key == *k {
		return ix.last.print, ix.last.present
	}
	p, ok := ix.below(k)
	ix.last.key, ix.last.print, ix.last.present, ix.last.valid = *k, p, ok, true
	return p, ok
}

func (ix *Index) below(k *[16]byte) (uint64, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	for i := len(ix.frozen) - 1; i >= 0; i-- {
		if p, present, known := ix.frozen[i].mem.get(k); known {
			return p, present
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
	_, present, known := ix.mem.get(&k)
	if !known {
		_, present = ix.lower(&k)
	}
	if !present {
		ix.n++
	}
	delete(ix.mem.tombs, k)
	ix.mem.puts[k] = print
}

// Delete removes k; it is a no-op when k is absent.
func (ix *Index) Delete(k [16]byte) {
	_, present, known := ix.mem.get(&k)
	if !known {
		_, present = ix.lower(&k)
	}
	if !present {
		return
	}
	ix.n--
	delete(ix.mem.puts, k)
	if _, below := ix.lower(&k); below {
		ix.mem.tombs[k] = struct{}{}
	}
}

// Len is the exact number of keys present.
func (ix *Index) Len() int { return ix.n }

// Frozen is the ops of one checkpoint, waiting to be persisted.
type Frozen struct {
	ix       *Index
	mem      memtable
	count    int
	manifest Manifest // set once persisted
}

// Checkpoint freezes the ops since the last checkpoint; later ops go to a
// fresh memtable. Lookups see the frozen ops until Persist has made them
// runs. It costs O(1).
func (ix *Index) Checkpoint() *Frozen {
	f := &Frozen{ix: ix, mem: ix.mem, count: ix.n}
	ix.mem = newMemtable()
	ix.last.valid = false // the memtable's ops are below now
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
// (none when store is nil: the runs stay in the cache) and returns the
// manifest; then the index serves these ops from the
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
	runs, err := ix.layout(ctx, old, f.entries())
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
	f.manifest, f.mem = m, memtable{}
	return m, nil
}

// entries returns the frozen ops as run entries, keys ascending.
func (f *Frozen) entries() []entry {
	es := make([]entry, 0, len(f.mem.puts)+len(f.mem.tombs))
	for k, p := range f.mem.puts {
		es = append(es, entry{key: k, print: p})
	}
	for k := range f.mem.tombs {
		es = append(es, entry{key: k, tomb: true})
	}
	slices.SortFunc(es, func(a, b entry) int { return bytes.Compare(a.key[:], b.key[:]) })
	return es
}

// layout returns the runs after adding es to old: es becomes the newest
// run, then while the newest run has at least as many entries as the one
// before it, the two are merged (newer entries win); a merge that makes
// the oldest run drops tombstones. It decides from entry counts alone,
// which are a pure function of the ops and checkpoints.
func (ix *Index) layout(ctx context.Context, old []*run, es []entry) ([]*run, error) {
	if len(es) == 0 {
		return old, nil
	}
	if err := os.MkdirAll(ix.dir, 0o755); err != nil {
		return nil, err
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
		m, err := merge(ctx, ix.dir, runs[n-2], runs[n-1], n == 2)
		if err != nil {
			closeNew(runs, old)
			return nil, err
		}
		closeNew(runs[n-2:], append(slices.Clip(old), m))
		runs = append(runs[:n-2], m)
	}
	return runs, nil
}

// merge writes the union of older and newer, newer winning a key both
// hold; oldest drops tombstones (nothing older is left for them to hide).
func merge(ctx context.Context, dir string, older, newer *run, oldest bool) (*run, error) {
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
		if w.count%(1<<20) == 0 && ctx.Err() != nil {
			return nil, w.abort(ctx.Err())
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

// closeNew closes the runs in runs that keep does not hold and removes
// their files, unless a run of keep has the same name (the same bytes).
func closeNew(runs, keep []*run) {
	for _, r := range runs {
		if slices.Contains(keep, r) {
			continue
		}
		r.close()
		if !slices.ContainsFunc(keep, func(x *run) bool { return x.name == r.name }) {
			removeRun(r.path)
		}
	}
}

// dropOld closes the runs of old that runs no longer holds and removes
// their files from the cache (the store keeps them for older manifests).
func dropOld(old, runs []*run) { closeNew(old, runs) }

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
