package projections

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"maps"
	"math"
	"slices"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// cidKey is an index key: the first 16 bytes of the SHA-256 of the CAR's
// CID string. Fixed and short, it halves the index against the 59-byte
// CIDs; every hit is checked against the CID its record holds, and two
// CIDs sharing a key (odds about 1e-27 at a million CARs) stop the
// projection with an error rather than mix their CARs up.
type cidKey [16]byte

func keyOf(car string) cidKey {
	sum := sha256.Sum256([]byte(car))
	return cidKey(sum[:16])
}

// cidIndex finds a CAR's number by its CID. The newest entries live in
// memory and reach the cids bucket in key order, many at a time.
//
// CIDs are hashes, so their keys are random: inserted one by one, each
// dirties its own page of the index in every commit, and at a million CARs
// that page writing was most of the projection's cost. Written sorted in
// runs of flushAt, a page takes several keys per write instead.
//
// Rules:
//   - Every CAR whose number is above the stored kIndexed mark is in recent
//     once its transaction has committed; every CAR at or below it is in
//     the bucket. Open rebuilds recent from the cars bucket past the mark.
//   - A writer adds a transaction's new entries to recent only after the
//     commit, and removes flushed ones only after the commit that wrote
//     them; readers look in recent before they open their transaction.
//     So a committed CAR is always found.
type cidIndex struct {
	mu      sync.RWMutex
	recent  map[cidKey]uint64
	flushAt int // entries held before they are written; MaxInt in a rebuild
}

// liveFlushAt bounds the entries held in memory while following the log:
// a few MiB, written in one commit every flushAt CARs. 262,144 wrote less
// (ingest at a million CARs: 63.7 → 61.0 CPU-µs per event) but left fewer
// index pages resident, and status requests paid more for paging them in
// (59 → 65–70 server CPU-µs per request).
var liveFlushAt = 1 << 16

func newCidIndex() *cidIndex {
	return &cidIndex{recent: map[cidKey]uint64{}, flushAt: liveFlushAt}
}

// get returns the number of a CAR not yet in the bucket.
func (x *cidIndex) get(k cidKey) (uint64, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	num, ok := x.recent[k]
	return num, ok
}

// load fills recent from the cars past the indexed mark.
func (x *cidIndex) load(tx *bolt.Tx) error {
	indexed := u64(tx.Bucket(bMeta).Get(kIndexed))
	cur := tx.Bucket(bCars).Cursor()
	for k, v := cur.Seek(be64(indexed + 1)); k != nil; k, v = cur.Next() {
		r, err := decodeRecord(u64(k), v)
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

// setBulk switches between a rebuild, which writes the index once at its
// end, and following the log.
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
}

func (t *indexTx) get(tx *bolt.Tx, k cidKey) (uint64, bool) {
	if num, ok := t.fresh[k]; ok {
		return num, true
	}
	if num, ok := t.x.get(k); ok {
		return num, true
	}
	if v := tx.Bucket(bCids).Get(k[:]); v != nil {
		return u64(v), true
	}
	return 0, false
}

func (t *indexTx) add(car string, num uint64) {
	if t.fresh == nil {
		t.fresh = map[cidKey]uint64{}
	}
	t.fresh[keyOf(car)] = num
}

// flush writes recent and fresh entries to the bucket, in key order, when
// they reach flushAt or force is set, and moves the mark to last. Only the
// projector's transaction calls it.
func (t *indexTx) flush(tx *bolt.Tx, last uint64, force bool) error {
	t.x.mu.RLock()
	n := len(t.x.recent) + len(t.fresh)
	t.x.mu.RUnlock()
	if n == 0 || (!force && n < t.x.flushAt) {
		return nil
	}
	keys, all := t.pending()
	b := tx.Bucket(bCids)
	if k, _ := b.Cursor().First(); k == nil {
		b.FillPercent = 1 // a first write, in key order, only appends
	}
	if err := putIndex(b, keys, all); err != nil {
		return err
	}
	t.flushed = true
	return tx.Bucket(bMeta).Put(kIndexed, be64(last))
}

// pending returns the entries waiting to be written, keys in order.
func (t *indexTx) pending() ([]cidKey, map[cidKey]uint64) {
	t.x.mu.RLock()
	all := make(map[cidKey]uint64, len(t.x.recent)+len(t.fresh))
	maps.Copy(all, t.x.recent)
	t.x.mu.RUnlock()
	maps.Copy(all, t.fresh)
	return slices.SortedFunc(maps.Keys(all), func(a, b cidKey) int { return bytes.Compare(a[:], b[:]) }), all
}

// putIndex puts keys, with their numbers from all, into b. bbolt holds
// keys and values until commit, so they live in one arena.
func putIndex(b *bolt.Bucket, keys []cidKey, all map[cidKey]uint64) error {
	arena := make([]byte, 0, len(keys)*(len(cidKey{})+8))
	for _, k := range keys {
		arena = append(arena, k[:]...)
		key := arena[len(arena)-len(k):]
		arena = binary.BigEndian.AppendUint64(arena, all[k])
		if err := b.Put(key, arena[len(arena)-8:]); err != nil {
			return err
		}
	}
	return nil
}

// bulkIndexTx bounds the keys of one transaction of a rebuild's index
// write: bbolt holds a transaction's new keys in one node until commit, and
// growing it to a million entries cost more than the puts (300,000 keys:
// 0.56 s in one transaction, 0.20 s in transactions of 16,384). A var so
// tests can cut a small rebuild into several.
var bulkIndexTx = 16384

// writeBulk writes every entry of a rebuild, sorted, in transactions of
// bulkIndexTx keys, then moves the mark to last. The file is marked as
// being rebuilt until the caller's final commit, so a crash in between
// leaves a file the next Open empties.
func (t *indexTx) writeBulk(db *bolt.DB, last uint64) error {
	keys, all := t.pending()
	var fill float64
	err := db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bCids).Cursor().First(); k == nil {
			fill = 1 // keys in order into an empty bucket only append
		}
		return nil
	})
	if err != nil {
		return err
	}
	for start := 0; start < len(keys); start += bulkIndexTx {
		chunk := keys[start:min(start+bulkIndexTx, len(keys))]
		err := db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bCids)
			if fill != 0 {
				b.FillPercent = fill
			}
			return putIndex(b, chunk, all)
		})
		if err != nil {
			return err
		}
	}
	t.flushed = true
	return db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bMeta).Put(kIndexed, be64(last)) })
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
