package projections

import (
	"math/rand/v2"
	"path/filepath"
	"testing"
)

// BenchmarkCarLive renders CARs at random, as the status API does, from
// read models of 400,000 CARs built the way ferry serve builds them (live
// transactions, the index flushed as it goes, so in several runs), for
// A/B of the read path without a network or another process.
func BenchmarkCarLive(b *testing.B) {
	const dealSize = 1 << 28
	entries, cars, _ := foldLog(b, 400_000, dealSize)
	s, err := Open(filepath.Join(b.TempDir(), "views.db"), dealSize)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	s.db.NoSync = true
	for start := 0; start < len(entries); start += maxTx {
		if err := s.Apply(entries[start:min(start+maxTx, len(entries))]); err != nil {
			b.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(1, 1))
	var buf []byte
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if buf, err = s.AppendCarJSON(buf[:0], cars[rng.IntN(len(cars))]); err != nil || len(buf) == 0 {
			b.Fatalf("answer %q, %v", buf, err)
		}
	}
}
