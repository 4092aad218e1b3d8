package projections

import (
	"math"
	"sync"

	"github.com/ferry-dev/ferry/internal/cidtext"
	bolt "go.etcd.io/bbolt"
)

// cidKey is an index key: the first 16 bytes of the SHA-256 of the CAR's
// CID string. Fixed and short, it halves the index against the 59-byte
// CIDs; every hit is checked against the CID its record holds, and two
// CIDs sharing a key (odds about 1e-27 at a million CARs) stop the
// projection with an error rather than mix their CARs up.
type cidKey [16]byte

func keyOf(car string) cidKey { return cidtext.Key(car) }

// cidIndex finds a CAR's number by its CID. The newest entries live in
// memory; older ones are stored in sorted runs.
//
// CIDs are hashes, so their keys are random. In a B+tree every write of
// a batch of them dirtied nearly every leaf of the index: at a million
// CARs, each flush of 65,536 entries rewrote ~40 MB of pages, and every
// commit paid for inflating those leaves. A run is instead one value of
// fixed-width entries sorted by key (runs.go), written once, sequentially,
// and merged with its neighbours like a binary counter (writeRun). Uniform
// keys let a lookup interpolate where its key sits in a run and search
// only a few thousand entries around that place.
//
// Rules:
//   - Every CAR whose number is above the stored kIndexed mark is in recent
//     once its transaction has committed; every CAR at or below it is in
//     a stored run. Open rebuilds recent from the cars bucket past the
//     mark.
//   - A writer adds a transaction's new entries to recent only after the
//     commit, and removes flushed ones only after the commit that wrote
//     them; readers look in recent before they open their transaction.
//     So a committed CAR is always found.
//   - A CID's key is added once, when the CAR gets its number (a number
//     never changes), so no key is in two places and no run needs a
//     tombstone.
type cidIndex struct {
	mu      sync.RWMutex
	recent  map[cidKey]uint64
	flushAt int // entries held before they are written; MaxInt in a rebuild
}

// liveFlushAt bounds the entries held in memory while following the log:
// a few MiB, written as a run every flushAt CARs.
var liveFlushAt = 1 << 16

func newCidIndex() *cidIndex {
	return &cidIndex{recent: map[cidKey]uint64{}, flushAt: liveFlushAt}
}

// get returns the number of a CAR not yet in a stored run.
func (x *cidIndex) get(k cidKey) (uint64, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	num, ok := x.recent[k]
	return num, ok
}

// load fills recent from the cars past the indexed mark.
func (x *cidIndex) load(tx *bolt.Tx) error {
	indexed := decodeUint64(tx.Bucket(bMeta).Get(kIndexed))
	cur := tx.Bucket(bCars).Cursor()
	for k, v := cur.Seek(encodeUint64(indexed + 1)); k != nil; k, v = cur.Next() {
		r, err := decodeRecord(decodeUint64(k), v)
		if err != nil {
			return err
		}
		x.recent[keyOf(r.view.Car)] = r.num
	}
	return nil
}

// reset forgets every entry (the read models were emptied).
func (x *cidIndex) reset() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.recent = map[cidKey]uint64{}
}

// setBulk switches between a rebuild, which writes the index as one run
// at its end, and following the log.
func (x *cidIndex) setBulk(on bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.flushAt = liveFlushAt
	if on {
		x.flushAt = math.MaxInt
	}
}

// indexTx is a write transaction's part of the index: its new entries.
type indexTx struct {
	x       *cidIndex
	fresh   map[cidKey]uint64
	flushed bool
	// runs are the stored runs, read once per transaction: the writer
	// looks up every new CAR (a miss in every run), and opening each run's
	// bucket per lookup cost more than searching it. They stay valid
	// until the flush that ends the transaction rewrites them.
	runs []run
	read bool
}

func (t *indexTx) get(tx *bolt.Tx, k cidKey) (uint64, bool) {
	if num, ok := t.fresh[k]; ok {
		return num, true
	}
	if num, ok := t.x.get(k); ok {
		return num, true
	}
	if !t.read {
		t.runs, t.read = storedRuns(tx), true
	}
	for _, r := range t.runs {
		if num, ok := r.find(k); ok {
			return num, true
		}
	}
	return 0, false
}

func (t *indexTx) add(car string, num uint64) {
	if t.fresh == nil {
		t.fresh = map[cidKey]uint64{}
	}
	t.fresh[keyOf(car)] = num
}

// flush writes recent and fresh entries as a run when they reach flushAt
// or force is set, and moves the mark to last. Only the projector's
// transaction calls it.
func (t *indexTx) flush(tx *bolt.Tx, last uint64, force bool) error {
	t.x.mu.RLock()
	n := len(t.x.recent) + len(t.fresh)
	t.x.mu.RUnlock()
	if n == 0 || (!force && n < t.x.flushAt) {
		return nil
	}
	if err := writeRun(tx, t.pending()); err != nil {
		return err
	}
	t.flushed = true
	return tx.Bucket(bMeta).Put(kIndexed, encodeUint64(last))
}

// pending returns the entries waiting to be written, as a run.
func (t *indexTx) pending() run {
	t.x.mu.RLock()
	defer t.x.mu.RUnlock()
	return sortedRun(t.x.recent, t.fresh)
}

// writeRun adds r to the stored runs in tx. Like a binary counter, it
// first merges r with the newest runs while they are no larger than it
// (and the result stays within maxRun entries): a run is then at least
// twice the size of the next newer one, so n entries make at most about
// log2(n/flushAt) runs, and each entry is copied that many times, in
// sequential writes, over its life.
func writeRun(tx *bolt.Tx, r run) error {
	runs := tx.Bucket(bCidRuns)
	next := uint64(1)
	for {
		name, _ := runs.Cursor().Last()
		if name == nil {
			break
		}
		prev := run(runs.Bucket(name).Get(kEntries))
		if prev.len() > r.len() || prev.len()+r.len() > maxRun {
			next = decodeUint64(name) + 1
			break
		}
		r = mergeRuns(prev, r) // copies prev out of the file before it goes
		if err := runs.DeleteBucket(name); err != nil {
			return err
		}
	}
	b, err := runs.CreateBucket(encodeUint64(next))
	if err != nil {
		return err
	}
	return b.Put(kEntries, r)
}

// findStored looks k up in the runs of tx, oldest (largest) first.
func findStored(tx *bolt.Tx, k cidKey) (num uint64, ok bool) {
	eachRun(tx, func(r run) bool {
		num, ok = r.find(k)
		return !ok
	})
	return num, ok
}

// storedRuns returns the runs of tx, oldest first.
func storedRuns(tx *bolt.Tx) (out []run) {
	eachRun(tx, func(r run) bool {
		out = append(out, r)
		return true
	})
	return out
}

// eachRun calls fn with the runs of tx, oldest first, while it returns
// true.
func eachRun(tx *bolt.Tx, fn func(run) bool) {
	runs := tx.Bucket(bCidRuns)
	c := runs.Cursor()
	for name, _ := c.First(); name != nil && fn(run(runs.Bucket(name).Get(kEntries))); name, _ = c.Next() {
	}
}

// writeBulk writes every entry of a rebuild as one run, then moves the
// mark to last. The file is marked as being rebuilt until the caller's
// final commit, so a crash in between leaves a file the next Open
// empties.
func (t *indexTx) writeBulk(db *bolt.DB, last uint64) error {
	r := t.pending()
	err := db.Update(func(tx *bolt.Tx) error {
		if r.len() > 0 {
			if err := writeRun(tx, r); err != nil {
				return err
			}
		}
		return tx.Bucket(bMeta).Put(kIndexed, encodeUint64(last))
	})
	if err != nil {
		return err
	}
	t.flushed = true
	return nil
}

// committed makes the transaction's entries visible: flushed ones leave
// memory, new ones join it.
func (t *indexTx) committed() {
	if !t.flushed && len(t.fresh) == 0 {
		return
	}
	t.x.mu.Lock()
	defer t.x.mu.Unlock()
	if t.flushed {
		t.x.recent = map[cidKey]uint64{}
		return
	}
	for k, v := range t.fresh {
		t.x.recent[k] = v
	}
}
