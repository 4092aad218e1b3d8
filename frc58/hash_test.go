package frc58

import (
	"math/rand/v2"
	"testing"

	"github.com/filecoin-project/go-data-segment/datasegment"
	"github.com/filecoin-project/go-data-segment/fr32"
	"github.com/filecoin-project/go-data-segment/merkletree"
)

func TestZeroCommitmentsMatchDataSegment(t *testing.T) {
	for l := 0; l <= maxLevel; l++ {
		if got, want := zeroComms[l], merkletree.ZeroCommitmentForLevel(l); got != want {
			t.Fatalf("zero commitment of level %d: got %x, want %x", l, got, want)
		}
	}
}

func TestNodeShiftIsTheLog2OfTheNodeSize(t *testing.T) {
	if got, want := 1<<nodeShift, merkletree.NodeSize; got != want {
		t.Fatalf("1<<nodeShift = %d, want %d", got, want)
	}
}

func TestHashPairIsTheTruncatedHashOfBothNodes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 100 {
		left, right := node(randomNode(rng)), node(randomNode(rng))
		got := hashPair(&left, &right)
		want := merkletree.TruncatedHash(append(left[:], right[:]...))
		if got != *want {
			t.Fatalf("hashPair(%x, %x) = %x, want %x", left, right, got, *want)
		}
	}
}

func TestIndexEntriesMatchDataSegment(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	tests := []struct {
		name         string
		root         [32]byte
		offset, size uint64
	}{
		{"an entry of the first, smallest piece", randomNode(rng), 0, 128},
		{"an entry whose root is all zeros", [32]byte{}, 1 << 20, 1 << 20},
		{"an entry whose root has its first and last bytes set", [32]byte{0: 0xff, 31: 0x3f}, 1<<35 - 1<<17, 1 << 17},
		{"an entry near the end of a 32 GiB deal", randomNode(rng), 32<<30 - 32<<20, 16 << 20},
	}
	for range 200 {
		size := uint64(128) << rng.IntN(30)
		tests = append(tests, struct {
			name         string
			root         [32]byte
			offset, size uint64
		}{"a random entry", randomNode(rng), size * rng.Uint64N(1<<10), size})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, err := datasegment.MakeDataSegmentIdx((*fr32.Fr32)(&tt.root), tt.offset, tt.size)
			if err != nil {
				t.Fatal(err)
			}
			got := indexEntry(&tt.root, tt.offset, tt.size)
			if wantBytes := want.SerializeFr32(); string(got[:]) != string(wantBytes) {
				t.Fatalf("entry bytes:\n got %x\nwant %x", got, wantBytes)
			}
			nodes := want.IntoNodes()
			wantLeaf := hashPair(&nodes[0], &nodes[1])
			if leaf := entryLeaf(&tt.root, tt.offset, tt.size); leaf != wantLeaf {
				t.Fatalf("entry leaf: got %x, want %x", leaf, wantLeaf)
			}
		})
	}
}

// randomNode is a random 254-bit node, as real piece roots are.
func randomNode(rng *rand.Rand) [32]byte {
	var n [32]byte
	for i := 0; i < len(n); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			n[i+j] = byte(v >> (8 * j))
		}
	}
	n[31] &= 0b00111111
	return n
}
