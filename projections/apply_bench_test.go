package projections

import (
	"path/filepath"
	"testing"
)

// BenchmarkApply is the projector's writer following the log: a folded
// log of 200,000 CARs (see foldLog) applied in transactions of maxTx
// batches, the index flushing every liveFlushAt CARs, into a new file per
// iteration. Commits skip fsync so that the figure is the writer's CPU,
// not the disk's. Metric: ns/batch.
func BenchmarkApply(b *testing.B) {
	const dealSize = 1 << 28
	entries, _, _ := foldLog(b, 200_000, dealSize)
	for i := range entries {
		entries[i].Prepare()
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		b.StopTimer()
		s, err := Open(filepath.Join(b.TempDir(), "views.db"), dealSize)
		if err != nil {
			b.Fatal(err)
		}
		s.db.NoSync = true
		b.StartTimer()
		for start := 0; start < len(entries); start += maxTx {
			if err := s.Apply(entries[start:min(start+maxTx, len(entries))]); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		s.Close()
		b.StartTimer()
		n += len(entries)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/batch")
}
