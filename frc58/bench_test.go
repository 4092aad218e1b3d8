package frc58

import (
	"flag"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/piece"
)

// The benchmarks' scale. The defaults are a CI smoke run (4096 pieces in a
// 32 GiB deal); the performance target is the full deal:
//
//	go test -run '^$' -bench Close -benchtime 3x ./frc58/ \
//	    -frc58.pieces=262144 -frc58.deal=34359738368
var (
	benchPieces = flag.Int("frc58.pieces", 4096, "pieces in the benchmark aggregate")
	benchDeal   = flag.Uint64("frc58.deal", 32<<30, "padded deal size of the benchmark aggregate, bytes")
	benchSample = flag.Int("frc58.sample", 4096, "go-data-segment proofs taken per op, the rest extrapolated; 0 takes all")
)

// Sinks keep the compiler from dropping the work.
var (
	sinkProof *Proof
	sinkNode  node
	sinkCID   string
)

// BenchmarkCloseFerry is the aggregator's work at close with this package:
// build the aggregate of -frc58.pieces pieces in a -frc58.deal deal, take
// its piece CID and every piece's inclusion proof. Sub-benchmark Proof
// takes each with Proof (a fresh proof the caller may keep, dropped here
// once made); EachProof takes them with EachProof (one reused proof, for a
// caller that encodes each at once).
//
// Metrics, per close: close-s is its wall time, measured; close-cpu-s the
// CPU time of the whole process meanwhile (less sensitive to other load on
// the machine; includes the GC's); build-s the wall time of New and the
// piece CID; proof-µs the mean wall time of one proof; MiB-heap the largest
// growth of HeapInuse over the heap before New, sampled after New and 16
// times while proving (proofs made but not yet collected count too).
func BenchmarkCloseFerry(b *testing.B) {
	b.Run("Proof", func(b *testing.B) {
		benchmarkCloseFerry(b, func(agg *Aggregate, each func(i int)) error {
			for i := range agg.Pieces {
				p, err := agg.Proof(i)
				if err != nil {
					return err
				}
				sinkProof = p
				each(i)
			}
			return nil
		})
	})
	b.Run("EachProof", func(b *testing.B) {
		benchmarkCloseFerry(b, func(agg *Aggregate, each func(i int)) error {
			return agg.EachProof(func(i int, p *Proof) error {
				sinkNode = p.ProofIndex.Path[0]
				each(i)
				return nil
			})
		})
	})
}

// benchmarkCloseFerry runs closes that take the proofs with prove, which
// calls each after every proof.
func benchmarkCloseFerry(b *testing.B, prove func(agg *Aggregate, each func(i int)) error) {
	pieces := benchLayout(b, *benchDeal, *benchPieces)
	var m closeMetrics
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		m.begin(b)
		agg, err := New(*benchDeal, pieces)
		if err != nil {
			b.Fatal(err)
		}
		sinkCID = agg.Commitment().V1().KeyString()
		m.built()
		err = prove(agg, func(i int) {
			if i%max(1, len(pieces)/16) == 0 {
				m.heap()
			}
		})
		if err != nil {
			b.Fatal(err)
		}
		m.proved()
	}
	m.report(b, len(pieces), len(pieces))
}

// BenchmarkCloseDataSegment is the same work done with go-data-segment, as
// frc58 did before it had its own tree: convert the pieces to
// abi.PieceInfo, datasegment.NewAggregate, PieceCID, ProofForIndexEntry.
//
// Taking all its proofs at full scale takes long (about 11 µs each on the
// reference machine, reported as up to 300 µs elsewhere: seconds to over a
// minute for 262,144), so each op EXTRAPOLATES: it takes at most
// -frc58.sample proofs, in 16 runs of consecutive pieces spread evenly over
// the deal, and reports close-s = build time + mean proof time × pieces
// (close-cpu-s likewise). ns/op and B/op cover only the work actually done
// (build, piece CID, the sampled proofs); proofs-sampled says how many.
// With -frc58.sample=0, or no more pieces than the sample, every proof is
// taken and close-s is measured. The other metrics are as in
// BenchmarkCloseFerry.
func BenchmarkCloseDataSegment(b *testing.B) {
	pieces := benchLayout(b, *benchDeal, *benchPieces)
	sample := len(pieces)
	if *benchSample > 0 {
		sample = min(sample, *benchSample)
	}
	var m closeMetrics
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		m.begin(b)
		agg, err := dataSegment(*benchDeal, pieces)
		if err != nil {
			b.Fatal(err)
		}
		c, err := agg.PieceCID()
		if err != nil {
			b.Fatal(err)
		}
		sinkCID = c.KeyString()
		m.built()
		for k := range sample {
			if sinkProof, err = agg.ProofForIndexEntry(sampled(k, sample, len(pieces))); err != nil {
				b.Fatal(err)
			}
			if k%max(1, sample/16) == 0 {
				m.heap()
			}
		}
		m.proved()
	}
	m.report(b, len(pieces), sample)
	b.ReportMetric(float64(sample), "proofs-sampled")
}

// sampled is the piece of the k-th of sample proofs out of n: sample/16
// consecutive pieces from each of 16 evenly spread places. Consecutive, as
// a close takes them: scattered pieces cost go-data-segment about twice as
// much per proof (its sparse tree's cache behaviour), which would inflate
// the extrapolation.
func sampled(k, sample, n int) int {
	const blocks = 16
	if sample >= n || sample < blocks {
		return k * n / sample
	}
	per := sample / blocks
	return min(n-1, (k/per)*(n/blocks)+k%per)
}

// benchLayout is n pieces that fill dealSize beside its index as far as
// equal power-of-two sizes allow: the largest size s with n·s in the room,
// then as many pieces as fit doubled to 2s, in ferry's layout order. For
// 262,144 pieces in 32 GiB that is 261,888 of 128 KiB and 256 of 64 KiB:
// every index entry used and the deal exactly full.
func benchLayout(tb testing.TB, dealSize uint64, n int) []piece.Commitment {
	tb.Helper()
	room := dealSize - min(dealSize, IndexReserve(dealSize))
	if n < 1 || n > MaxEntries(dealSize) || uint64(n)*piece.MinPaddedSize > room {
		tb.Fatalf("%d pieces do not fit a %d byte deal", n, dealSize)
	}
	s := uint64(1) << (bits.Len64(room/uint64(n)) - 1)
	doubled := int(min(uint64(n), (room-uint64(n)*s)/s))
	rng := rand.New(rand.NewPCG(uint64(n), dealSize))
	pieces := make([]piece.Commitment, n)
	for i := range pieces {
		size := s
		if i < doubled {
			size = 2 * s
		}
		pieces[i] = randomPiece(rng, size)
	}
	return pieces
}

// closeMetrics accumulates the phases of the closes of one benchmark.
type closeMetrics struct {
	start, done         time.Time
	startCPU            time.Duration
	build, proofs       time.Duration // wall
	buildCPU, proofsCPU time.Duration
	base, peak          uint64 // HeapInuse before New; largest growth seen
}

// begin collects garbage and takes the heap baseline off the clock, then
// starts a close.
func (m *closeMetrics) begin(b *testing.B) {
	b.StopTimer()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.base = ms.HeapInuse
	b.StartTimer()
	m.start, m.startCPU = time.Now(), cpuTime()
}

// built ends the build phase.
func (m *closeMetrics) built() {
	now, cpu := time.Now(), cpuTime()
	m.build += now.Sub(m.start)
	m.buildCPU += cpu - m.startCPU
	m.start, m.startCPU = now, cpu
	m.heap()
}

// proved ends the proof phase.
func (m *closeMetrics) proved() {
	m.heap()
	m.proofs += time.Since(m.start)
	m.proofsCPU += cpuTime() - m.startCPU
}

func (m *closeMetrics) heap() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if ms.HeapInuse > m.base {
		m.peak = max(m.peak, ms.HeapInuse-m.base)
	}
}

// report reports the metrics of b.N closes of n pieces in which taken
// proofs were taken; the proof phase is scaled to all n.
func (m *closeMetrics) report(b *testing.B, n, taken int) {
	ops, scale := float64(b.N), float64(n)/float64(taken)
	b.ReportMetric((m.build.Seconds()+m.proofs.Seconds()*scale)/ops, "close-s")
	b.ReportMetric((m.buildCPU.Seconds()+m.proofsCPU.Seconds()*scale)/ops, "close-cpu-s")
	b.ReportMetric(m.build.Seconds()/ops, "build-s")
	b.ReportMetric(m.proofs.Seconds()*1e6/ops/float64(taken), "proof-µs")
	b.ReportMetric(float64(m.peak)/(1<<20), "MiB-heap")
}
