// Package frc58 sizes and builds FRC-0058 aggregates: the room a deal
// reserves for its index and the largest piece it holds (MaxEntries,
// IndexReserve, MaxPiece), the layout of pieces in a deal, the aggregate's
// piece commitment, and each piece's inclusion proof. A piece's own padded
// size is the commitment's (package piece), which this package builds on.
//
// # Rules
//
//   - The sizes are go-data-segment's: MaxEntries is its
//     MaxIndexEntriesInDeal, the index takes MaxEntries 64-byte entries at
//     the end of the deal, and a piece fits beside it only if it is at most
//     MaxPiece.
//   - The order of the pieces given to New is the layout. Layout returns the
//     order ferry uses: largest first, arrival order among equals, which
//     leaves no alignment gaps because every piece is a power of two.
//   - Each piece is placed at the next offset that is a multiple of its
//     padded size, as go-data-segment places it; the index of
//     MaxEntries(dealSize) 64-byte entries ends the deal.
//   - The results agree with go-data-segment byte for byte; its verifier
//     (ComputeExpectedAuxData) is the judge of every proof (Verify).
//   - New does all the hashing: ferry's own tree holds only the nodes at and
//     above the pieces and the index entries, so a Proof is one lookup per
//     tree level. An Aggregate is immutable and safe for concurrent use.
package frc58

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/ferry-dev/ferry/piece"
	"github.com/filecoin-project/go-data-segment/datasegment"
	"github.com/filecoin-project/go-data-segment/merkletree"
	"github.com/filecoin-project/go-state-types/abi"
)

// Errors returned by New and Proof. New also returns piece.ErrBadSize,
// wrapped, for a deal or piece size that is not a valid padded size.
var (
	// ErrDoesNotFit is returned by New when the pieces and the index do not
	// fit the deal.
	ErrDoesNotFit = errors.New("pieces do not fit the deal")
	// ErrNoPiece is returned by Proof for an index outside the pieces.
	ErrNoPiece = errors.New("no such piece in the aggregate")
)

// Proof is an FRC-0058 inclusion proof of a piece in an aggregate.
type Proof = datasegment.InclusionProof

// Layout returns the indexes of pieces in layout order: padded size
// descending, stable among equals.
func Layout(padded []uint64) []int {
	order := make([]int, len(padded))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		switch {
		case padded[a] > padded[b]:
			return -1
		case padded[a] < padded[b]:
			return 1
		}
		return 0
	})
	return order
}

// Arrange returns pieces (in arrival order) in layout order, and the
// layout: order[pos] is the arrival index of the piece at pos.
func Arrange(pieces []piece.Commitment) (laid []piece.Commitment, order []int) {
	sizes := make([]uint64, len(pieces))
	for i, p := range pieces {
		sizes[i] = p.Padded
	}
	order = Layout(sizes)
	laid = make([]piece.Commitment, len(order))
	for pos, i := range order {
		laid[pos] = pieces[i]
	}
	return laid, order
}

// Fits reports whether pieces of total padded size used, count of them,
// fit a deal of dealSize beside its index.
func Fits(dealSize, used uint64, count int) bool {
	return count <= MaxEntries(dealSize) && used+IndexReserve(dealSize) <= dealSize
}

// Aggregate is a built aggregate.
type Aggregate struct {
	DealSize uint64
	// Pieces in layout order, as given to New. The proofs do not read them.
	Pieces  []piece.Commitment
	offsets []uint64
	levels  []uint8 // each piece's level in the tree: log2(padded/32)
	tree    *tree
}

// New builds the aggregate of pieces, which are in layout order. It returns
// ErrDoesNotFit when they do not fit beside the index.
func New(dealSize uint64, pieces []piece.Commitment) (*Aggregate, error) {
	if !piece.ValidPadded(dealSize) {
		return nil, fmt.Errorf("frc58: deal size %d: %w", dealSize, piece.ErrBadSize)
	}
	offsets, err := place(dealSize, pieces)
	if err != nil {
		return nil, err
	}
	levels := make([]uint8, len(pieces))
	for i, p := range pieces {
		levels[i] = uint8(levelOf(p.Padded))
	}
	return &Aggregate{
		DealSize: dealSize,
		Pieces:   pieces,
		offsets:  offsets,
		levels:   levels,
		tree:     newTree(dealSize, pieces, offsets),
	}, nil
}

// place computes each piece's padded offset: the next multiple of its size
// after the previous piece, as go-data-segment's ComputeDealPlacement does.
// In ferry's layout (largest first) that leaves no gaps.
func place(dealSize uint64, pieces []piece.Commitment) ([]uint64, error) {
	reserve := IndexReserve(dealSize)
	if len(pieces) > MaxEntries(dealSize) || reserve > dealSize {
		return nil, fmt.Errorf("%w: %d pieces in a %d byte deal with room for %d index entries",
			ErrDoesNotFit, len(pieces), dealSize, MaxEntries(dealSize))
	}
	room := dealSize - reserve
	offsets := make([]uint64, len(pieces))
	var end uint64
	for i, p := range pieces {
		if !piece.ValidPadded(p.Padded) {
			return nil, fmt.Errorf("frc58: piece %d: padded size %d: %w", i, p.Padded, piece.ErrBadSize)
		}
		// end ≤ room < 2^63 and Padded ≤ 2^63 (a power of two), so no overflow.
		off := (end + p.Padded - 1) &^ (p.Padded - 1)
		if p.Padded > room || off > room-p.Padded {
			return nil, fmt.Errorf("%w: piece %d of %d padded bytes at offset %d passes the index at %d (%d pieces in a %d byte deal)",
				ErrDoesNotFit, i, p.Padded, off, room, len(pieces), dealSize)
		}
		offsets[i], end = off, off+p.Padded
	}
	return offsets, nil
}

// Commitment is the aggregate's piece: the deal's root over the whole
// padded deal, whose payload is the full unpadded deal (index included).
func (a *Aggregate) Commitment() piece.Commitment {
	return piece.Commitment{Root: a.tree.root(), Padded: a.DealSize, Payload: piece.Unpadded(a.DealSize)}
}

// Offsets returns each piece's padded offset in the deal, in layout order.
func (a *Aggregate) Offsets() []uint64 {
	return slices.Clone(a.offsets)
}

// Proof returns the inclusion proof of the i-th piece in layout order, or
// ErrNoPiece. It hashes nothing: both paths are lookups in the tree New built.
func (a *Aggregate) Proof(i int) (*Proof, error) {
	if i < 0 || i >= len(a.offsets) {
		return nil, fmt.Errorf("frc58: proof %d of %d pieces: %w", i, len(a.offsets), ErrNoPiece)
	}
	var p Proof
	a.proof(&p, make([]node, 0, 2*a.tree.depth-int(a.levels[i])-1), i)
	return &p, nil
}

// EachProof calls fn with the inclusion proof of every piece, in layout
// order, and returns the first error fn returns. It reuses one Proof for
// all calls, so fn must not keep p or its paths: encode or copy them.
// Where Proof allocates each proof's paths, EachProof allocates nothing
// per piece.
func (a *Aggregate) EachProof(fn func(i int, p *Proof) error) error {
	var p Proof
	buf := make([]node, 0, 2*a.tree.depth)
	for i := range a.offsets {
		a.proof(&p, buf[:0], i)
		if err := fn(i, &p); err != nil {
			return err
		}
	}
	return nil
}

// proof sets p to the proof of piece i, with both paths in buf, which has
// room for them.
func (a *Aggregate) proof(p *Proof, buf []node, i int) {
	t, l := a.tree, int(a.levels[i])
	idx := indexAt(a.offsets[i], l)
	entry := t.entries + uint64(i)
	// The subtree path climbs from the piece's level, the index path from
	// level 1 (an entry's node).
	buf = t.path(buf, l, idx)
	sub := len(buf)
	buf = t.path(buf, 1, entry)
	p.ProofSubtree = merkletree.ProofData{Path: buf[:sub:sub], Index: idx}
	p.ProofIndex = merkletree.ProofData{Path: buf[sub:], Index: entry}
}

// Verify checks with go-data-segment's verifier that proof places p in agg.
func Verify(proof *Proof, p, agg piece.Commitment) error {
	aux, err := proof.ComputeExpectedAuxData(datasegment.InclusionVerifierData{
		CommPc: p.V1(), SizePc: abi.PaddedPieceSize(p.Padded),
	})
	if err != nil {
		return fmt.Errorf("inclusion proof: %w", err)
	}
	if !aux.CommPa.Equals(agg.V1()) || uint64(aux.SizePa) != agg.Padded {
		return fmt.Errorf("inclusion proof: leads to %s/%d, not the aggregate %s/%d", aux.CommPa, aux.SizePa, agg.V1(), agg.Padded)
	}
	return nil
}

// EncodeProof is the proof's CBOR form (go-data-segment's).
func EncodeProof(p *Proof) ([]byte, error) {
	return AppendProofCBOR(make([]byte, 0, 8+34*(len(p.ProofSubtree.Path)+len(p.ProofIndex.Path))), p)
}

// maxProofPath is go-data-segment's bound on a path it encodes or decodes.
const maxProofPath = 128

// AppendProofCBOR appends the proof's CBOR form to dst, byte for byte what
// go-data-segment's MarshalCBOR writes, without its writers and per-node
// calls (the status API renders one per request):
//
//	[[subtree index, [node, …]], [index index, [node, …]]]
//
// with each node a 32-byte byte string. It stays because it moves the
// status API line (docs/benchmarks.md); a test holds the two equal.
func AppendProofCBOR(dst []byte, p *Proof) ([]byte, error) {
	dst = append(dst, 0x80|2) // array of 2
	for _, pd := range []*merkletree.ProofData{&p.ProofSubtree, &p.ProofIndex} {
		if len(pd.Path) > maxProofPath {
			return nil, fmt.Errorf("inclusion proof: path of %d nodes, at most %d encode", len(pd.Path), maxProofPath)
		}
		dst = append(dst, 0x80|2)
		dst = appendCBORHeader(dst, 0, pd.Index)
		dst = appendCBORHeader(dst, 4, uint64(len(pd.Path)))
		for i := range pd.Path {
			dst = append(dst, 0x40|24, merkletree.NodeSize) // byte string of 32
			dst = append(dst, pd.Path[i][:]...)
		}
	}
	return dst, nil
}

// appendCBORHeader appends a CBOR head of major type major and argument v,
// in its shortest form.
func appendCBORHeader(dst []byte, major byte, v uint64) []byte {
	m := major << 5
	switch {
	case v < 24:
		return append(dst, m|byte(v))
	case v <= 0xff:
		return append(dst, m|24, byte(v))
	case v <= 0xffff:
		return binary.BigEndian.AppendUint16(append(dst, m|25), uint16(v))
	case v <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(dst, m|26), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(dst, m|27), v)
}

// DecodeProof reads a proof in CBOR form.
func DecodeProof(b []byte) (*Proof, error) {
	var p Proof
	if err := p.UnmarshalCBOR(bytes.NewReader(b)); err != nil {
		return nil, fmt.Errorf("inclusion proof: %w", err)
	}
	return &p, nil
}
