package projections

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/frc58"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/piece"
	"github.com/ferry-dev/ferry/wire"
	"github.com/filecoin-project/go-data-segment/merkletree"
	bolt "go.etcd.io/bbolt"
)

// foldLog folds n CARs through the real aggregator into aggregate-log
// entries: most with a piece, some queued and given one later, some
// invalid, some repeated. want is each CAR's expected aggregate (0 for
// QUEUED or REJECTED) from the decisions.
func foldLog(t testing.TB, n int, dealSize uint64) (entries []LoggedBatch, cars []string, want map[string]uint64) {
	t.Helper()
	st := aggregator.New(events.Settings{DealSize: dealSize, MinPayload: dealSize, MaxWait: 1 << 62})
	rng := rand.New(rand.NewPCG(7, uint64(n)))
	var seq uint64
	in := func(ev events.Event) {
		seq++
		if b := st.Apply(seq, testutil.MustEncode(ev)); len(b.Decisions) > 0 {
			e := LoggedBatch{Seq: uint64(len(entries) + 1), Batch: b}
			if seq%2 == 0 {
				e.Prepare() // half as the projector's reader gives them
			}
			entries = append(entries, e)
		}
	}
	var queued []int
	for i := range n {
		size := uint64(1000 + rng.IntN(20000))
		ev := testutil.Replicated(i, size, rng.IntN(5) > 0)
		switch rng.IntN(20) {
		case 0:
			ev.MD5 = "not-md5" // rejected
		case 1:
			in(ev) // a repeat is ignored
		}
		if ev.Piece == "" {
			queued = append(queued, i)
		}
		in(ev)
		cars = append(cars, ev.Car)
		if len(queued) > 0 && rng.IntN(3) == 0 {
			j := queued[0]
			queued = queued[1:]
			c := testutil.CarCID(j).String()
			in(&events.CarPiece{Car: c, Piece: testutil.FakePiece(j, 1000).MustV2().String()})
		}
	}
	want = map[string]uint64{}
	for _, e := range entries {
		for _, d := range e.Batch.Decisions {
			switch d.Type {
			case events.DecCarAdded:
				want[d.Car] = d.Aggregate
			case events.DecCarQueued, events.DecCarRejected:
				if d.Car != "" {
					want[d.Car] = 0
				}
			}
		}
	}
	return entries, cars, want
}

// checkCars reads every CAR back: found, in the aggregate the log put it
// in, and, once that aggregate is closed, with an inclusion proof that
// go-data-segment's verifier accepts for the aggregate's piece.
func checkCars(t *testing.T, s *Store, cars []string, want map[string]uint64) (closed int) {
	t.Helper()
	for _, car := range cars {
		v, err := s.Car(car)
		if err != nil {
			t.Fatalf("CAR %s: %v", car, err)
		}
		// The status API's rendering is json.Marshal of the view.
		marshalled, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := s.AppendCarJSON(nil, car); err != nil || !bytes.Equal(got, marshalled) {
			t.Fatalf("CAR %s rendered as\n%s (%v), json.Marshal gives\n%s", car, got, err, marshalled)
		}
		if v.Aggregate != want[car] && v.State != aggregator.Rejected {
			t.Fatalf("CAR %s in aggregate %d, the log put it in %d", car, v.Aggregate, want[car])
		}
		if v.State != aggregator.Ready {
			continue
		}
		closed++
		p, err := piece.Parse(v.Piece, 0)
		if err != nil {
			t.Fatal(err)
		}
		agg, err := piece.Parse(v.AggregatePiece, 0)
		if err != nil {
			t.Fatal(err)
		}
		proof, err := frc58.DecodeProof(v.Inclusion.CBOR)
		if err != nil {
			t.Fatal(err)
		}
		if err := frc58.Verify(proof, p, agg); err != nil {
			t.Fatalf("CAR %s: %v", car, err)
		}
		// The hex paths are the same proof.
		for _, pair := range []struct {
			hex   wire.ProofPath
			nodes merkletree.ProofData
		}{{v.Inclusion.Subtree, proof.ProofSubtree}, {v.Inclusion.Index, proof.ProofIndex}} {
			if pair.hex.Index != pair.nodes.Index || len(pair.hex.Path) != len(pair.nodes.Path) {
				t.Fatalf("CAR %s: hex path %+v, CBOR %+v", car, pair.hex, pair.nodes)
			}
			for i, n := range pair.nodes.Path {
				if pair.hex.Path[i] != hex.EncodeToString(n[:]) {
					t.Fatalf("CAR %s: node %d is %s in hex, %x in CBOR", car, i, pair.hex.Path[i], n)
				}
			}
		}
	}
	return closed
}

// rebuilding opens read models at path and applies entries in a rebuild
// not yet finished.
func rebuilding(t *testing.T, path string, dealSize uint64, entries []LoggedBatch) *Store {
	t.Helper()
	s, err := Open(path, dealSize)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Bulk(true); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(entries); err != nil {
		t.Fatal(err)
	}
	return s
}

func indexed(t *testing.T, s *Store) (bucket, memory int) {
	t.Helper()
	_ = s.db.View(func(tx *bolt.Tx) error {
		for _, r := range storedRuns(tx) {
			bucket += r.len()
		}
		return nil
	})
	s.index.mu.RLock()
	defer s.index.mu.RUnlock()
	return bucket, len(s.index.recent)
}

// TestCidIndexFlushesAndReloads applies a log in transactions of random
// size with the index flushing every few CARs, while readers look up every
// CAR already committed; then reopens the file, which must find the CARs
// not yet flushed from the cars bucket.
func TestCidIndexFlushesAndReloads(t *testing.T) {
	defer func(at int) { liveFlushAt = at }(liveFlushAt)
	liveFlushAt = 37
	const dealSize = 1 << 20
	entries, cars, want := foldLog(t, 600, dealSize)
	path := filepath.Join(t.TempDir(), "views.db")
	s, err := Open(path, dealSize)
	if err != nil {
		t.Fatal(err)
	}
	// Readers: every CAR whose transaction committed must be found.
	var committed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var misses atomic.Int64
	for r := range 2 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 1))
			for {
				select {
				case <-stop:
					return
				default:
				}
				n := committed.Load()
				if n == 0 {
					continue
				}
				car := cars[rng.IntN(int(n))]
				if _, err := s.Car(car); errors.Is(err, ErrNotFound) {
					misses.Add(1)
				}
			}
		})
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for len(entries) > 0 {
		k := min(len(entries), 1+rng.IntN(25))
		if err := s.Apply(entries[:k]); err != nil {
			t.Fatal(err)
		}
		// The CARs of applied inputs: all up to the last one named.
		for _, e := range entries[:k] {
			for _, d := range e.Batch.Decisions {
				for i := committed.Load(); i < int64(len(cars)) && d.Car != ""; i++ {
					if cars[i] == d.Car {
						committed.Store(i + 1)
						break
					}
				}
			}
		}
		entries = entries[k:]
	}
	close(stop)
	wg.Wait()
	if m := misses.Load(); m > 0 {
		t.Fatalf("%d lookups missed a committed CAR", m)
	}
	if closed := checkCars(t, s, cars, want); closed == 0 {
		t.Fatal("no aggregate closed: the test covers nothing of the layout")
	}
	bucket, memory := indexed(t, s)
	if bucket == 0 || memory == 0 {
		t.Fatalf("index: %d in the bucket, %d in memory; the test wants both", bucket, memory)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, dealSize)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if b, m := indexed(t, s); b != bucket || m != memory {
		t.Fatalf("reopened index: %d+%d, was %d+%d", b, m, bucket, memory)
	}
	checkCars(t, s, cars, want)
}

// TestBulkWritesIndexAtEnd rebuilds in bulk: nothing reaches the index
// bucket until Bulk(false), after which every CAR is found from it alone.
func TestBulkWritesIndexAtEnd(t *testing.T) {
	const dealSize = 1 << 20
	entries, cars, want := foldLog(t, 300, dealSize)
	s := rebuilding(t, filepath.Join(t.TempDir(), "views.db"), dealSize, entries)
	defer s.Close()
	if b, _ := indexed(t, s); b != 0 {
		t.Fatalf("%d index entries written during the rebuild", b)
	}
	if err := s.Bulk(false); err != nil {
		t.Fatal(err)
	}
	if b, m := indexed(t, s); b != len(want) || m != 0 {
		t.Fatalf("index after the rebuild: %d in the bucket, %d in memory; want %d and 0", b, m, len(want))
	}
	checkCars(t, s, cars, want)
}

// TestUnfinishedBulkStartsOver: a rebuild that died leaves a marked file,
// which Open empties.
func TestUnfinishedBulkStartsOver(t *testing.T) {
	const dealSize = 1 << 20
	entries, _, _ := foldLog(t, 50, dealSize)
	path := filepath.Join(t.TempDir(), "views.db")
	s := rebuilding(t, path, dealSize, entries)
	s.db.Close() // dies without Bulk(false)
	s, err := Open(path, dealSize)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if seq := s.AggSeq(); seq != 0 {
		t.Fatalf("unfinished rebuild kept, at sequence %d", seq)
	}
}

// TestIndexKeyClashIsNeverAnotherCAR forges two CIDs sharing an index key:
// a lookup of the second must not answer with the first's record, and
// accepting it must stop the projection instead of mixing them up.
func TestIndexKeyClashIsNeverAnotherCAR(t *testing.T) {
	const dealSize = 1 << 20
	entries, cars, _ := foldLog(t, 20, dealSize)
	s := rebuilding(t, filepath.Join(t.TempDir(), "views.db"), dealSize, entries)
	defer s.Close()
	if err := s.Bulk(false); err != nil {
		t.Fatal(err)
	}
	other := testutil.CarCID(1_000_000).String()
	err := s.db.Update(func(tx *bolt.Tx) error {
		num, ok := findStored(tx, keyOf(cars[0]))
		if !ok {
			return fmt.Errorf("CAR %s not in the index", cars[0])
		}
		forged := keyOf(other)
		return writeRun(tx, sortedRun(map[cidKey]uint64{forged: num}))
	})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := s.Car(other); !errors.Is(err, ErrNotFound) {
		t.Fatalf("CAR %s answered with %+v, %v", other, v, err)
	}
	ev := testutil.Replicated(1_000_000, 5000, false)
	b := events.Batch{In: 1 << 40, Decisions: []events.Decision{{Type: events.DecCarQueued, Car: ev.Car,
		Record: &events.Record{Size: ev.Size, MD5: ev.MD5, URLs: ev.URLs}}}}
	if err := s.Apply([]LoggedBatch{{Seq: 1 << 40, Batch: b}}); !errors.Is(err, errKeyClash) {
		t.Fatalf("accepting a clashing CID: %v", err)
	}
}
