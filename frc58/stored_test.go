package frc58

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/piece"
	"github.com/filecoin-project/go-data-segment/merkletree"
)

// TestStoredAgreesWithAggregate is the property test of the stored form:
// for random layouts, a Stored read from AppendBinary gives every proof
// Aggregate.Proof gives, each passing go-data-segment's verifier, the
// offsets, and the piece CID go-data-segment computes; read through an
// unaligned slice too, as bbolt may hand it out.
func TestStoredAgreesWithAggregate(t *testing.T) {
	big := 3000
	if raceEnabled {
		big = 200
	}
	tests := []struct {
		name     string
		deal     uint64
		count    int
		maxPiece uint64 // 0: a quarter of the deal
		shuffled bool   // arrival order: alignment gaps, more runs per level
		seeds    int
	}{
		{"a single piece in an 8 KiB deal", 8 * kib, 1, 0, false, 4},
		{"the maximum of 4 entries in an 8 KiB deal", 8 * kib, 4, 0, false, 4},
		{"a few pieces in a 64 KiB deal", 64 * kib, 3, 0, false, 4},
		{"the maximum of 64 entries of small pieces in an 8 MiB deal", 8 * mib, 64, 64 * kib, false, 4},
		{"the maximum of 64 entries of any size in an 8 MiB deal", 8 * mib, 64, 0, false, 4},
		{"pieces in arrival order, with alignment gaps, in an 8 MiB deal", 8 * mib, 40, 128 * kib, true, 8},
		{"a few pieces of up to 8 GiB in a 32 GiB deal", 32 * gib, 8, 0, false, 4},
		{fmt.Sprintf("%d pieces of mixed sizes in a 32 GiB deal", big), 32 * gib, big, 0, false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			maxPiece := tt.maxPiece
			if maxPiece == 0 {
				maxPiece = tt.deal / 4
			}
			checked := 0
			for seed := range tt.seeds {
				rng := rand.New(rand.NewPCG(uint64(seed), tt.deal^0x5707ed))
				pieces := randomLayout(rng, tt.deal, tt.count, maxPiece)
				if tt.shuffled {
					rng.Shuffle(len(pieces), func(i, j int) { pieces[i], pieces[j] = pieces[j], pieces[i] })
				}
				agg, err := New(tt.deal, pieces)
				if errors.Is(err, ErrDoesNotFit) && tt.shuffled {
					continue // alignment pushed a piece into the index
				} else if err != nil {
					t.Fatal(err)
				}
				mustStoreAlike(t, agg)
				checked++
			}
			if checked == 0 {
				t.Fatal("no layout fitted")
			}
		})
	}
}

func TestStoredEdgeCases(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	exact := sized(rng, 4*mib, 2*mib, mib, 512*kib, 256*kib, 128*kib, 64*kib, 32*kib, 16*kib, 8*kib, 4*kib)
	tests := []struct {
		name   string
		deal   uint64
		pieces []piece.Commitment
	}{
		{"an aggregate of no pieces", 8 * kib, nil},
		{"an aggregate of no pieces in a 32 GiB deal", 32 * gib, nil},
		{"a single smallest piece", 8 * kib, sized(rng, 128)},
		{"a single piece as large as fits beside the index", 8 * mib, sized(rng, MaxPiece(8*mib))},
		{"pieces exactly filling the room before the index", 8 * mib, exact},
		{"pieces in arrival order that leave alignment gaps", mib, sized(rng, 128, 4*kib, 256, 64*kib)},
		{"a piece whose root is all zeros", 64 * kib, []piece.Commitment{{Padded: 4 * kib}, sized(rng, 128)[0], {Padded: 128}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agg, err := New(tt.deal, tt.pieces)
			if err != nil {
				t.Fatal(err)
			}
			mustStoreAlike(t, agg)
		})
	}
}

// mustStoreAlike checks the stored form of agg against agg and against
// go-data-segment, aligned and not, and that it holds no more than the
// tree's nodes, the runs and 9 bytes per piece.
func mustStoreAlike(t *testing.T, agg *Aggregate) {
	t.Helper()
	want, err := dataSegment(agg.DealSize, agg.Pieces)
	if err != nil {
		t.Fatalf("go-data-segment: %v", err)
	}
	wantCID, err := want.PieceCID()
	if err != nil {
		t.Fatal(err)
	}
	blob := agg.AppendBinary(nil)
	if got := agg.AppendBinary([]byte("prefix")); string(got[:6]) != "prefix" || !bytes.Equal(got[6:], blob) {
		t.Fatal("AppendBinary after a prefix differs from AppendBinary(nil)")
	}
	var runs, nodes int
	for _, lv := range agg.tree.levels {
		runs, nodes = runs+len(lv.runs), nodes+len(lv.nodes)
	}
	header := hdrSize + (agg.tree.depth+1)*levelHdrSize
	if size := header + 9*len(agg.Pieces) + runSize*runs + merkletree.NodeSize*nodes; len(blob) != size {
		t.Fatalf("blob of %d bytes, want %d: %d header, %d pieces, %d runs, %d nodes", len(blob), size, header, len(agg.Pieces), runs, nodes)
	}

	unaligned := make([]byte, len(blob)+1)
	copy(unaligned[1:], blob)
	for _, b := range [][]byte{blob, unaligned[1:]} {
		kept := bytes.Clone(b)
		s, err := OpenStored(b)
		if err != nil {
			t.Fatalf("OpenStored: %v", err)
		}
		if s.DealSize() != agg.DealSize || s.Len() != len(agg.Pieces) {
			t.Fatalf("stored deal of %d bytes with %d pieces, want %d with %d", s.DealSize(), s.Len(), agg.DealSize, len(agg.Pieces))
		}
		if s.Commitment() != agg.Commitment() {
			t.Fatalf("stored commitment %v, want %v", s.Commitment(), agg.Commitment())
		}
		if got := s.Commitment().V1(); !got.Equals(wantCID) {
			t.Fatalf("stored piece CID %s, go-data-segment's %s", got, wantCID)
		}
		offsets := agg.Offsets()
		for i, p := range agg.Pieces {
			if s.Offset(i) != offsets[i] {
				t.Fatalf("stored offset of piece %d: %d, want %d", i, s.Offset(i), offsets[i])
			}
			got, err := s.Proof(i)
			if err != nil {
				t.Fatalf("stored Proof(%d): %v", i, err)
			}
			w, err := agg.Proof(i)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, w) {
				t.Fatalf("stored proof of piece %d:\n%+v\nwant\n%+v", i, got, w)
			}
			if p.Root == [32]byte{} {
				continue // go-data-segment's own proofs of a zero root do not verify
			}
			if err := Verify(got, p, s.Commitment()); err != nil {
				t.Fatalf("stored proof of piece %d: %v", i, err)
			}
		}
		for _, i := range []int{-1, len(agg.Pieces), len(agg.Pieces) + 100} {
			if _, err := s.Proof(i); !errors.Is(err, ErrNoPiece) {
				t.Fatalf("stored Proof(%d): got %v, want ErrNoPiece", i, err)
			}
			if off := s.Offset(i); off != 0 {
				t.Fatalf("stored Offset(%d) = %d, want 0", i, off)
			}
		}
		if !bytes.Equal(b, kept) {
			t.Fatal("reading the stored form changed it")
		}
	}
}

func TestOpenStoredRejectsMalformed(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	agg, err := New(mib, sized(rng, 128, 4*kib, 256, 64*kib)) // gaps: several runs
	if err != nil {
		t.Fatal(err)
	}
	blob := agg.AppendBinary(nil)
	if _, err := OpenStored(blob); err != nil {
		t.Fatal(err)
	}
	mutated := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(blob)) }
	levelHdr := func(l, field int) int { return hdrSize + l*levelHdrSize + 8*field }
	firstRuns := func() int { // the first level with two runs or more
		for l := range agg.tree.levels {
			if len(agg.tree.levels[l].runs) > 1 {
				return int(le.Uint64(blob[levelHdr(l, 2):]))
			}
		}
		t.Fatal("no level with two runs")
		return 0
	}()
	tests := []struct {
		name string
		b    []byte
	}{
		{"no bytes", nil},
		{"a header cut short", blob[:hdrSize-1]},
		{"the header alone", blob[:hdrSize]},
		{"the last byte missing", blob[:len(blob)-1]},
		{"a byte too many", append(bytes.Clone(blob), 0)},
		{"another version", mutated(func(b []byte) []byte { b[hdrVersion] = 2; return b })},
		{"a depth that is not the deal's", mutated(func(b []byte) []byte { b[hdrDepth]++; return b })},
		{"a deal size that is not a power of two", mutated(func(b []byte) []byte { le.PutUint64(b[hdrDealSize:], 3*mib); return b })},
		{"more pieces than index entries", mutated(func(b []byte) []byte { le.PutUint64(b[hdrPieces:], 1<<40); return b })},
		{"one more piece", mutated(func(b []byte) []byte { le.PutUint64(b[hdrPieces:], 5); return b })},
		{"the index elsewhere", mutated(func(b []byte) []byte { le.PutUint64(b[hdrEntries:], 0); return b })},
		{"a level's runs elsewhere", mutated(func(b []byte) []byte { le.PutUint64(b[levelHdr(5, 2):], 0); return b })},
		{"a level of huge node count", mutated(func(b []byte) []byte { le.PutUint64(b[levelHdr(5, 1):], 1<<61); return b })},
		{"a level of huge run count", mutated(func(b []byte) []byte { le.PutUint64(b[levelHdr(5, 0):], 1<<60); return b })},
		{"runs out of order", mutated(func(b []byte) []byte { le.PutUint64(b[firstRuns+runSize:], 0); return b })},
		{"a run's nodes past the level's", mutated(func(b []byte) []byte { le.PutUint64(b[firstRuns+runSize+8:], 1<<20); return b })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := OpenStored(tt.b)
			if !errors.Is(err, ErrBadStored) {
				t.Fatalf("OpenStored: got %v, want ErrBadStored", err)
			}
			t.Log(err)
		})
	}

	t.Run("a piece above the root", func(t *testing.T) {
		b := bytes.Clone(blob)
		s, err := OpenStored(b)
		if err != nil {
			t.Fatal(err)
		}
		b[s.levelsAt+2] = 200 // OpenStored does not read the pieces
		if _, err := s.Proof(2); !errors.Is(err, ErrBadStored) {
			t.Fatalf("Proof: got %v, want ErrBadStored", err)
		}
	})
}

// FuzzOpenStored checks that no bytes make OpenStored or a Stored's
// methods panic, and that what OpenStored rejects it rejects with
// ErrBadStored.
func FuzzOpenStored(f *testing.F) {
	rng := rand.New(rand.NewPCG(25, 26))
	var blobs [][]byte
	for _, c := range []struct {
		deal   uint64
		pieces []piece.Commitment
	}{
		{8 * kib, nil},
		{8 * kib, sized(rng, 256, 128, 128)},
		{mib, sized(rng, 128, 4*kib, 256, 64*kib)},
		{8 * mib, randomLayout(rng, 8*mib, 12, mib)},
	} {
		agg, err := New(c.deal, c.pieces)
		if err != nil {
			f.Fatal(err)
		}
		blobs = append(blobs, agg.AppendBinary(nil))
	}
	for _, b := range blobs {
		f.Add(b)
		f.Add(b[:len(b)-1])
		f.Add(b[:len(b)/2])
		f.Add(b[:hdrSize+levelHdrSize])
		flipped := bytes.Clone(b)
		flipped[len(b)-40] ^= 0xff
		f.Add(flipped)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := OpenStored(b)
		if err != nil {
			if !errors.Is(err, ErrBadStored) {
				t.Fatalf("OpenStored: %v is not ErrBadStored", err)
			}
			return
		}
		_ = s.Commitment()
		_ = s.DealSize()
		for i := -1; i <= s.Len(); i++ {
			_ = s.Offset(i)
			if _, err := s.Proof(i); err != nil && !errors.Is(err, ErrNoPiece) && !errors.Is(err, ErrBadStored) {
				t.Fatalf("Proof(%d): %v", i, err)
			}
		}
	})
}

// BenchmarkStoredProof is a read model's proof request at the
// -frc58.pieces / -frc58.deal scale (262,144 pieces in a 32 GiB deal is
// the target): OpenStored+Proof opens the stored form and takes a proof,
// as a request does; Stored only takes the proof; Aggregate takes it from
// the built aggregate, for comparison; Interleaved alternates blocks of 64
// of each, so that load from elsewhere on the machine skews both alike.
// Pieces are taken in a scattered order, as requests come. blob-B/piece is
// the stored form's size per piece.
func BenchmarkStoredProof(b *testing.B) {
	pieces := benchLayout(b, *benchDeal, *benchPieces)
	agg, err := New(*benchDeal, pieces)
	if err != nil {
		b.Fatal(err)
	}
	blob := agg.AppendBinary(nil)
	unaligned := make([]byte, len(blob)+1)
	copy(unaligned[1:], blob)
	blob = unaligned[1:]
	n := len(pieces)
	// scatter visits every piece once per n requests, far apart.
	scatter := func(k int) int { return int(uint64(k) * 0x9E3779B97F4A7C15 % uint64(n)) }
	report := func(b *testing.B) {
		b.ReportMetric(float64(len(blob))/float64(n), "blob-B/piece")
	}

	b.Run("OpenStored+Proof", func(b *testing.B) {
		b.ReportAllocs()
		k := 0
		for b.Loop() {
			s, err := OpenStored(blob)
			if err != nil {
				b.Fatal(err)
			}
			if sinkProof, err = s.Proof(scatter(k)); err != nil {
				b.Fatal(err)
			}
			k++
		}
		report(b)
	})
	b.Run("Stored", func(b *testing.B) {
		s, err := OpenStored(blob)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		k := 0
		for b.Loop() {
			if sinkProof, err = s.Proof(scatter(k)); err != nil {
				b.Fatal(err)
			}
			k++
		}
		report(b)
	})
	b.Run("Interleaved", func(b *testing.B) {
		s, err := OpenStored(blob)
		if err != nil {
			b.Fatal(err)
		}
		var ts, ta time.Duration
		k := 0
		for b.Loop() {
			t0 := time.Now()
			for j := range 64 {
				if sinkProof, err = s.Proof(scatter(k + j)); err != nil {
					b.Fatal(err)
				}
			}
			t1 := time.Now()
			for j := range 64 {
				if sinkProof, err = agg.Proof(scatter(k + j)); err != nil {
					b.Fatal(err)
				}
			}
			ta += time.Since(t1)
			ts += t1.Sub(t0)
			k += 64
		}
		b.ReportMetric(float64(ts.Nanoseconds())/float64(k), "stored-ns/proof")
		b.ReportMetric(float64(ta.Nanoseconds())/float64(k), "aggregate-ns/proof")
	})
	b.Run("Aggregate", func(b *testing.B) {
		b.ReportAllocs()
		k := 0
		for b.Loop() {
			if sinkProof, err = agg.Proof(scatter(k)); err != nil {
				b.Fatal(err)
			}
			k++
		}
		report(b)
	})
}
