package frc58

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/ferry-dev/ferry/piece"
	"github.com/filecoin-project/go-data-segment/datasegment"
	"github.com/filecoin-project/go-data-segment/merkletree"
	"github.com/filecoin-project/go-state-types/abi"
)

const (
	kib = uint64(1) << 10
	mib = uint64(1) << 20
	gib = uint64(1) << 30
)

// TestAgreesWithDataSegment is the property test: for random layouts the
// piece CID, the offsets and every proof equal go-data-segment's, and every
// proof passes its verifier.
func TestAgreesWithDataSegment(t *testing.T) {
	big := 3000 // pieces in the 32 GiB case
	if raceEnabled {
		big = 200 // go-data-segment's proofs are slow under the race detector
	}
	tests := []struct {
		name     string
		deal     uint64
		count    int    // pieces wanted; fewer when the deal fills up first
		maxPiece uint64 // 0: a quarter of the deal
		shuffled bool   // keep the random order instead of ferry's layout
		seeds    int
	}{
		{"a single piece in an 8 KiB deal", 8 * kib, 1, 0, false, 8},
		{"the maximum of 4 entries in an 8 KiB deal", 8 * kib, 4, 0, false, 8},
		{"a single piece in a 16 KiB deal", 16 * kib, 1, 0, false, 8},
		{"a few pieces in a 64 KiB deal", 64 * kib, 3, 0, false, 8},
		{"the maximum of 4 entries in a 1 MiB deal", mib, 4, 0, false, 8},
		{"a single piece in an 8 MiB deal", 8 * mib, 1, 0, false, 4},
		{"a dozen pieces in an 8 MiB deal", 8 * mib, 12, 0, false, 8},
		{"the maximum of 64 entries of small pieces in an 8 MiB deal", 8 * mib, 64, 64 * kib, false, 8},
		{"the maximum of 64 entries of any size in an 8 MiB deal", 8 * mib, 64, 0, false, 8},
		{"pieces in arrival order, with alignment gaps, in a 1 MiB deal", mib, 4, 0, true, 16},
		{"pieces in arrival order, with alignment gaps, in an 8 MiB deal", 8 * mib, 40, 128 * kib, true, 16},
		{"pieces in arrival order that alignment often pushes into the index", 8 * mib, 40, 0, true, 16},
		{"a few pieces of up to 8 GiB in a 32 GiB deal", 32 * gib, 8, 0, false, 8},
		{fmt.Sprintf("%d pieces of mixed sizes in a 32 GiB deal", big), 32 * gib, big, 0, false, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			maxPiece := tt.maxPiece
			if maxPiece == 0 {
				maxPiece = tt.deal / 4
			}
			for seed := range tt.seeds {
				rng := rand.New(rand.NewPCG(uint64(seed), tt.deal))
				pieces := randomLayout(rng, tt.deal, tt.count, maxPiece)
				if len(pieces) < tt.count {
					t.Fatalf("seed %d: drew %d pieces, want %d", seed, len(pieces), tt.count)
				}
				if tt.shuffled {
					rng.Shuffle(len(pieces), func(i, j int) { pieces[i], pieces[j] = pieces[j], pieces[i] })
				}
				if agg := mustAgree(t, tt.deal, pieces); agg != nil {
					verifyAll(t, agg)
				}
			}
		})
	}
}

var fullTest = flag.Bool("frc58.full", false, "run TestFullDealAgreesWithDataSegment")

// TestFullDealAgreesWithDataSegment checks the layout of the performance
// target, a full 32 GiB deal with every one of its 262,144 index entries
// used, against go-data-segment: piece CID, offsets, every proof, and every
// proof verified.
func TestFullDealAgreesWithDataSegment(t *testing.T) {
	if !*fullTest {
		t.Skip("takes about 20 s and 1.5 GiB of heap (go-data-segment's part); run with -frc58.full")
	}
	agg := mustAgree(t, 32*gib, benchLayout(t, 32*gib, 262144))
	if agg == nil {
		t.Fatal("go-data-segment rejected the layout")
	}
	verifyAll(t, agg)
}

func TestEdgeCases(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	exact := sized(rng, 4*mib, 2*mib, mib, 512*kib, 256*kib, 128*kib, 64*kib, 32*kib, 16*kib, 8*kib, 4*kib)
	maxEntries := append(sized(rng, repeat(128*kib, 63)...), sized(rng, 64*kib)...)
	tests := []struct {
		name   string
		deal   uint64
		pieces []piece.Commitment
	}{
		{"an aggregate of no pieces is the empty deal", 8 * kib, nil},
		{"a single smallest piece", 8 * kib, sized(rng, 128)},
		{"a single piece as large as fits beside the index", 8 * mib, sized(rng, MaxPiece(8*mib))},
		{"pieces exactly filling the room before the index", 8 * mib, exact},
		{"the maximum number of entries", 8 * mib, maxEntries},
		{"pieces in arrival order that leave alignment gaps", mib, sized(rng, 128, 4*kib, 256, 64*kib)},
		{"a piece whose root is all zeros", 64 * kib, []piece.Commitment{{Padded: 4 * kib}, sized(rng, 128)[0], {Padded: 128}}},
	}
	if used := sum(exact) + IndexReserve(8*mib); used != 8*mib {
		t.Fatalf("the exact layout uses %d bytes of an 8 MiB deal", used)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agg := mustAgree(t, tt.deal, tt.pieces)
			if agg == nil {
				t.Fatal("go-data-segment rejected the layout")
			}
			if slices.ContainsFunc(tt.pieces, func(p piece.Commitment) bool { return p.Root == [32]byte{} }) {
				return // go-data-segment's own proofs of a zero root do not verify
			}
			verifyAll(t, agg)
		})
	}
}

func TestDoesNotFit(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	exact := sized(rng, 4*mib, 2*mib, mib, 512*kib, 256*kib, 128*kib, 64*kib, 32*kib, 16*kib, 8*kib, 4*kib)
	tests := []struct {
		name   string
		deal   uint64
		pieces []piece.Commitment
	}{
		{"one more piece than the index has entries", 8 * kib, sized(rng, repeat(128, 5)...)},
		{"one more piece than the 8 MiB index has entries", 8 * mib, sized(rng, repeat(128, 65)...)},
		{"an exact fill plus the smallest piece", 8 * mib, append(slices.Clone(exact), sized(rng, 128)...)},
		{"a piece as large as the deal", 8 * kib, sized(rng, 8*kib)},
		{"a piece twice the largest that fits", 8 * mib, sized(rng, 2*MaxPiece(8*mib))},
		{"alignment that pushes a piece into the index", 8 * kib, sized(rng, 128, 4*kib, 2*kib)},
		{"a deal too small for its own index", 128, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.deal, tt.pieces); !errors.Is(err, ErrDoesNotFit) {
				t.Fatalf("New: got %v, want ErrDoesNotFit", err)
			}
			if _, err := dataSegment(tt.deal, tt.pieces); err == nil {
				t.Fatal("go-data-segment accepted the layout")
			}
		})
	}
}

func TestBadSizes(t *testing.T) {
	tests := []struct {
		name   string
		deal   uint64
		pieces []piece.Commitment
	}{
		{"a deal size that is not a power of two", 3 * mib, nil},
		{"a deal size of zero", 0, nil},
		{"a piece size that is not a power of two", 8 * mib, []piece.Commitment{{Padded: 3 * kib}}},
		{"a piece size below 128 bytes", 8 * mib, []piece.Commitment{{Padded: 64}}},
		{"a piece size of zero", 8 * mib, []piece.Commitment{{Padded: 128}, {}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.deal, tt.pieces); !errors.Is(err, piece.ErrBadSize) {
				t.Fatalf("New: got %v, want piece.ErrBadSize", err)
			}
		})
	}
}

func TestProofOfAMissingPiece(t *testing.T) {
	agg, err := New(8*kib, sized(rand.New(rand.NewPCG(9, 10)), 128, 128))
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{-1, 2, 100} {
		if _, err := agg.Proof(i); !errors.Is(err, ErrNoPiece) {
			t.Fatalf("Proof(%d): got %v, want ErrNoPiece", i, err)
		}
	}
}

// TestParallelHashingAgrees forces every level onto several goroutines, which
// the small layouts of the other tests never do, and checks the result
// against go-data-segment (and, under -race, for data races).
func TestParallelHashingAgrees(t *testing.T) {
	defer func(m int) { minChunk = m }(minChunk)
	minChunk = 1
	rng := rand.New(rand.NewPCG(11, 12))
	for _, shuffled := range []bool{false, true} {
		pieces := randomLayout(rng, 8*mib, 64, mib)
		if shuffled {
			rng.Shuffle(len(pieces), func(i, j int) { pieces[i], pieces[j] = pieces[j], pieces[i] })
		}
		if agg := mustAgree(t, 8*mib, pieces); agg != nil {
			verifyAll(t, agg)
		}
	}
}

func TestProofsMayBeTakenConcurrently(t *testing.T) {
	pieces := randomLayout(rand.New(rand.NewPCG(13, 14)), 8*mib, 64, mib)
	agg, err := New(8*mib, pieces)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i := range pieces {
				if p, err := agg.Proof(i); err != nil {
					t.Error(err)
				} else if err := Verify(p, pieces[i], agg.Commitment()); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
}

func TestEachProofGivesEveryProofInOrder(t *testing.T) {
	pieces := randomLayout(rand.New(rand.NewPCG(17, 18)), 8*mib, 64, mib)
	agg, err := New(8*mib, pieces)
	if err != nil {
		t.Fatal(err)
	}
	next := 0
	err = agg.EachProof(func(i int, p *Proof) error {
		if i != next {
			t.Fatalf("EachProof gave piece %d, want %d", i, next)
		}
		next++
		want, err := agg.Proof(i)
		if err != nil {
			return err
		}
		if p.ProofSubtree.Index != want.ProofSubtree.Index || !slices.Equal(p.ProofSubtree.Path, want.ProofSubtree.Path) ||
			p.ProofIndex.Index != want.ProofIndex.Index || !slices.Equal(p.ProofIndex.Path, want.ProofIndex.Path) {
			t.Fatalf("EachProof of piece %d differs from Proof", i)
		}
		return nil
	})
	if err != nil || next != len(pieces) {
		t.Fatalf("EachProof: %v after %d of %d pieces", err, next, len(pieces))
	}
}

func TestEachProofStopsAtTheFirstError(t *testing.T) {
	agg, err := New(8*mib, randomLayout(rand.New(rand.NewPCG(19, 20)), 8*mib, 8, mib))
	if err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop")
	calls := 0
	err = agg.EachProof(func(i int, p *Proof) error {
		calls++
		if i == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 3 {
		t.Fatalf("EachProof: got %v after %d calls, want stop after 3", err, calls)
	}
}

func TestTheAggregateKeepsItsOwnPlacement(t *testing.T) {
	pieces := sized(rand.New(rand.NewPCG(15, 16)), 256, 128)
	agg, err := New(8*kib, slices.Clone(pieces))
	if err != nil {
		t.Fatal(err)
	}
	agg.Offsets()[1] = 4096
	agg.Pieces[1].Padded = 4096
	if got, want := agg.Offsets(), []uint64{0, 256}; !slices.Equal(got, want) {
		t.Fatalf("Offsets: got %v, want %v", got, want)
	}
	p, err := agg.Proof(1)
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(p, pieces[1], agg.Commitment()); err != nil {
		t.Fatalf("proof after changing Pieces: %v", err)
	}
}

// mustAgree builds pieces with New and with go-data-segment and checks that
// both accept or both reject them, and that an accepted aggregate has the
// same piece CID, offsets and proofs in both. It returns New's aggregate,
// or nil when both rejected the layout.
func mustAgree(t *testing.T, dealSize uint64, pieces []piece.Commitment) *Aggregate {
	t.Helper()
	want, wantErr := dataSegment(dealSize, pieces)
	got, err := New(dealSize, pieces)
	if wantErr != nil {
		if !errors.Is(err, ErrDoesNotFit) {
			t.Fatalf("go-data-segment rejected %d pieces (%v); New: got %v, want ErrDoesNotFit", len(pieces), wantErr, err)
		}
		return nil
	}
	if err != nil {
		t.Fatalf("New: %v (go-data-segment accepted %d pieces)", err, len(pieces))
	}
	wantCID, err := want.PieceCID()
	if err != nil {
		t.Fatal(err)
	}
	if gotCID := got.Commitment().V1(); !gotCID.Equals(wantCID) {
		t.Fatalf("piece CID of %d pieces in a %d byte deal: got %s, want %s", len(pieces), dealSize, gotCID, wantCID)
	}
	offsets := got.Offsets()
	for i := range pieces {
		if offsets[i] != want.Index.Entries[i].Offset {
			t.Fatalf("offset of piece %d: got %d, want %d", i, offsets[i], want.Index.Entries[i].Offset)
		}
		mustProveAlike(t, got, want, i)
	}
	return got
}

func mustProveAlike(t *testing.T, got *Aggregate, want *datasegment.Aggregate, i int) {
	t.Helper()
	p, err := got.Proof(i)
	if err != nil {
		t.Fatalf("Proof(%d): %v", i, err)
	}
	w, err := want.ProofForIndexEntry(i)
	if err != nil {
		t.Fatal(err)
	}
	if p.ProofSubtree.Index != w.ProofSubtree.Index || !slices.Equal(p.ProofSubtree.Path, w.ProofSubtree.Path) {
		t.Fatalf("subtree proof of piece %d: got %d %x, want %d %x", i, p.ProofSubtree.Index, p.ProofSubtree.Path, w.ProofSubtree.Index, w.ProofSubtree.Path)
	}
	if p.ProofIndex.Index != w.ProofIndex.Index || !slices.Equal(p.ProofIndex.Path, w.ProofIndex.Path) {
		t.Fatalf("index proof of piece %d: got %d %x, want %d %x", i, p.ProofIndex.Index, p.ProofIndex.Path, w.ProofIndex.Index, w.ProofIndex.Path)
	}
}

// verifyAll checks every proof with go-data-segment's verifier, and that it
// survives the CBOR round trip.
func verifyAll(t *testing.T, agg *Aggregate) {
	t.Helper()
	for i, p := range agg.Pieces {
		proof, err := agg.Proof(i)
		if err != nil {
			t.Fatal(err)
		}
		b, err := EncodeProof(proof)
		if err != nil {
			t.Fatal(err)
		}
		decoded, err := DecodeProof(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := Verify(decoded, p, agg.Commitment()); err != nil {
			t.Fatalf("proof of piece %d: %v", i, err)
		}
	}
}

// dataSegment is the aggregate as go-data-segment builds it.
func dataSegment(dealSize uint64, pieces []piece.Commitment) (*datasegment.Aggregate, error) {
	infos := make([]abi.PieceInfo, len(pieces))
	for i, p := range pieces {
		infos[i] = abi.PieceInfo{Size: abi.PaddedPieceSize(p.Padded), PieceCID: p.V1()}
	}
	return datasegment.NewAggregate(abi.PaddedPieceSize(dealSize), infos)
}

// randomLayout draws up to count pieces of random power-of-two sizes from
// 128 bytes to maxPiece and returns them in ferry's layout order. A size is
// halved while it exceeds 4 times the fair share of the room left (so that
// a few thousand pieces of mixed sizes fit a large deal) or does not fit.
// It stops early when even 128 bytes no longer fit.
func randomLayout(rng *rand.Rand, dealSize uint64, count int, maxPiece uint64) []piece.Commitment {
	top := bits.TrailingZeros64(maxPiece)
	room := dealSize - min(dealSize, IndexReserve(dealSize))
	var used uint64
	var out []piece.Commitment
	for len(out) < count {
		size := uint64(1) << (7 + rng.IntN(top-7+1))
		share := (room - used) / uint64(count-len(out))
		for size > piece.MinPaddedSize && (size > 4*share || !Fits(dealSize, used+size, len(out)+1)) {
			size /= 2
		}
		if !Fits(dealSize, used+size, len(out)+1) {
			break
		}
		used += size
		out = append(out, randomPiece(rng, size))
	}
	padded := make([]uint64, len(out))
	for i, p := range out {
		padded[i] = p.Padded
	}
	layout := make([]piece.Commitment, len(out))
	for i, j := range Layout(padded) {
		layout[i] = out[j]
	}
	return layout
}

func randomPiece(rng *rand.Rand, padded uint64) piece.Commitment {
	return piece.Commitment{Root: randomNode(rng), Padded: padded, Payload: piece.Unpadded(padded)}
}

// sized is pieces of the given padded sizes, in that order, with random roots.
func sized(rng *rand.Rand, sizes ...uint64) []piece.Commitment {
	out := make([]piece.Commitment, len(sizes))
	for i, s := range sizes {
		out[i] = randomPiece(rng, s)
	}
	return out
}

func repeat(size uint64, n int) []uint64 { return slices.Repeat([]uint64{size}, n) }

func sum(pieces []piece.Commitment) uint64 {
	var total uint64
	for _, p := range pieces {
		total += p.Padded
	}
	return total
}

// TestAppendProofCBORIsDataSegments holds ferry's CBOR writer to
// go-data-segment's MarshalCBOR: the proofs of random layouts, and made-up
// proofs whose indexes and path lengths take every width of a CBOR head.
func TestAppendProofCBORIsDataSegments(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	var proofs []*Proof
	for range 20 {
		agg, err := New(32*gib, randomLayout(rng, 32*gib, 1+rng.IntN(200), 64*mib))
		if err != nil {
			t.Fatal(err)
		}
		for i := range agg.Pieces {
			p, err := agg.Proof(i)
			if err != nil {
				t.Fatal(err)
			}
			proofs = append(proofs, p)
		}
	}
	path := func(n int) []merkletree.Node {
		out := make([]merkletree.Node, n)
		for i := range out {
			for j := range out[i] {
				out[i][j] = byte(rng.Uint32())
			}
		}
		return out
	}
	for _, index := range []uint64{0, 23, 24, 255, 256, 65535, 65536, 1<<32 - 1, 1 << 32, 1<<64 - 1} {
		for _, n := range []int{0, 1, 23, 24, 30, maxProofPath} {
			proofs = append(proofs, &Proof{
				ProofSubtree: merkletree.ProofData{Index: index, Path: path(n)},
				ProofIndex:   merkletree.ProofData{Index: index / 3, Path: path(maxProofPath - n)},
			})
		}
	}
	for i, p := range proofs {
		var want bytes.Buffer
		if err := p.MarshalCBOR(&want); err != nil {
			t.Fatal(err)
		}
		got, err := AppendProofCBOR([]byte("x"), p)
		if err != nil {
			t.Fatalf("proof %d: %v", i, err)
		}
		if !bytes.Equal(got[1:], want.Bytes()) || got[0] != 'x' {
			t.Fatalf("proof %d (indexes %d, %d; paths %d, %d):\n got %x\nwant %x", i,
				p.ProofSubtree.Index, p.ProofIndex.Index, len(p.ProofSubtree.Path), len(p.ProofIndex.Path), got[1:], want.Bytes())
		}
	}
	// A path go-data-segment would not encode (nor decode) is refused.
	long := &Proof{ProofIndex: merkletree.ProofData{Path: path(maxProofPath + 1)}}
	if err := long.MarshalCBOR(&bytes.Buffer{}); err == nil {
		t.Fatal("go-data-segment encoded a path longer than its bound")
	}
	if _, err := AppendProofCBOR(nil, long); err == nil {
		t.Fatal("AppendProofCBOR encoded a path longer than go-data-segment's bound")
	}
}
