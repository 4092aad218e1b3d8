package projections

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math/bits"
	"math/rand/v2"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// someKeys returns n entries with keys from keyOf (uniform), numbered
// from first.
func someKeys(n, first int) map[cidKey]uint64 {
	m := make(map[cidKey]uint64, n)
	for i := range n {
		m[keyOf(fmt.Sprintf("car-%d", first+i))] = uint64(first + i + 1)
	}
	return m
}

// TestRunFind checks find against a map, for uniform keys of many run
// sizes and for keys far from uniform (which the interpolated window
// misses, so the search must widen).
func TestRunFind(t *testing.T) {
	skewed := func(n int) map[cidKey]uint64 {
		m := map[cidKey]uint64{}
		for i := range n {
			var k cidKey
			binary.BigEndian.PutUint64(k[:], 1<<63+uint64(i)*3) // all near the middle
			binary.BigEndian.PutUint64(k[8:], uint64(i))
			m[k] = uint64(i + 1)
		}
		return m
	}
	for _, n := range []int{0, 1, 2, 3, 17, 1000, 100_000} {
		for name, m := range map[string]map[cidKey]uint64{"uniform": someKeys(n, 0), "skewed": skewed(n)} {
			r := sortedRun(m)
			if r.len() != n {
				t.Fatalf("%s %d: run of %d", name, n, r.len())
			}
			for k, num := range m {
				if got, ok := r.find(k); !ok || got != num {
					t.Fatalf("%s %d: key %x found %d, %v; want %d", name, n, k, got, ok, num)
				}
			}
			for k := range someKeys(1000, 1<<30) {
				if got, ok := r.find(k); ok {
					t.Fatalf("%s %d: absent key %x found as %d", name, n, k, got)
				}
			}
			var top cidKey // the largest key sorts after every entry
			for i := range top {
				top[i] = 0xff
			}
			if _, ok := r.find(top); ok {
				t.Fatalf("%s %d: the largest key found", name, n)
			}
		}
	}
}

// TestWriteRunMergesLikeACounter writes runs of flushAt entries, as the
// projector does, and checks after each: the runs hold every entry written
// (found by findStored, in order within each run), their count is the
// number of ones in the count of flushes (a binary counter), and a merge
// never makes a run above maxRun.
func TestWriteRunMergesLikeACounter(t *testing.T) {
	defer func(n int) { maxRun = n }(maxRun)
	const flushAt = 50
	maxRun = 8 * flushAt
	db, err := bolt.Open(filepath.Join(t.TempDir(), "runs.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket(bCidRuns); return err }); err != nil {
		t.Fatal(err)
	}
	all := map[cidKey]uint64{}
	for flush := 1; flush <= 21; flush++ {
		batch := someKeys(flushAt, len(all))
		maps.Copy(all, batch)
		err := db.Update(func(tx *bolt.Tx) error { return writeRun(tx, sortedRun(batch)) })
		if err != nil {
			t.Fatal(err)
		}
		err = db.View(func(tx *bolt.Tx) error {
			runs := storedRuns(tx)
			// Below the cap the runs are the binary digits of the flushes;
			// the cap leaves full runs of maxRun apart.
			full := flush / (maxRun / flushAt)
			want := full + bits.OnesCount(uint(flush%(maxRun/flushAt)))
			if len(runs) != want {
				return fmt.Errorf("after %d flushes: %d runs, want %d", flush, len(runs), want)
			}
			total := 0
			for i, r := range runs {
				if r.len() > maxRun {
					return fmt.Errorf("run %d holds %d entries, above %d", i, r.len(), maxRun)
				}
				for j := 1; j < r.len(); j++ {
					h0, l0 := r.at(j - 1)
					if h1, l1 := r.at(j); !less(h0, l0, h1, l1) {
						return fmt.Errorf("run %d out of order at %d", i, j)
					}
				}
				total += r.len()
			}
			if total != len(all) {
				return fmt.Errorf("runs hold %d entries, %d written", total, len(all))
			}
			for k, num := range all {
				if got, ok := findStored(tx, k); !ok || got != num {
					return fmt.Errorf("key %x: %d, %v; want %d", k, got, ok, num)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// BenchmarkSortedRun is the index run a rebuild of a million CARs writes
// at its end.
func BenchmarkSortedRun(b *testing.B) {
	m := someKeys(1_000_000, 0)
	b.ReportAllocs()
	for b.Loop() {
		sortedRun(m)
	}
}

// BenchmarkRunFind looks keys up at random in runs of 2^19, 2^18, 2^17 and
// 2^16 entries, oldest (largest) first, as a status request does after a
// million CARs followed live (about 24 MiB of runs, well past the
// caches). Every key looked up is in one of them.
func BenchmarkRunFind(b *testing.B) {
	var runs []run
	var keys []cidKey
	first := 0
	for _, n := range []int{1 << 19, 1 << 18, 1 << 17, 1 << 16} {
		m := someKeys(n, first)
		first += n
		runs = append(runs, sortedRun(m))
		for k := range m {
			keys = append(keys, k)
		}
	}
	rng := rand.New(rand.NewPCG(15, 16))
	b.ResetTimer()
	for b.Loop() {
		k := keys[rng.IntN(len(keys))]
		found := false
		for _, r := range runs {
			if _, ok := r.find(k); ok {
				found = true
				break
			}
		}
		if !found {
			b.Fatalf("key %x not found", k)
		}
	}
}
