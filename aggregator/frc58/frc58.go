// Package frc58 builds FRC-0058 aggregates: the layout of pieces in a deal,
// the aggregate's piece commitment, and each piece's inclusion proof.
//
// # Rules
//
//   - The order of the pieces given to New is the layout. Layout returns the
//     order ferry uses: largest first, arrival order among equals, which
//     leaves no alignment gaps because every piece is a power of two.
//   - The results agree with go-data-segment byte for byte; its verifier
//     (ComputeExpectedAuxData) is the judge of every proof (Verify).
package frc58

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"github.com/filecoin-project/go-data-segment/datasegment"
	"github.com/filecoin-project/go-state-types/abi"
	"github.com/ferry-dev/ferry/piece"
)

// ErrDoesNotFit is returned by New when the pieces and the index do not fit the deal.
var ErrDoesNotFit = errors.New("pieces do not fit the deal")

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

// Fits reports whether pieces of total padded size used, count of them,
// fit a deal of dealSize beside its index.
func Fits(dealSize, used uint64, count int) bool {
	return count <= piece.MaxEntries(dealSize) && used+piece.IndexReserve(dealSize) <= dealSize
}

// Aggregate is a built aggregate.
type Aggregate struct {
	DealSize uint64
	// Pieces in layout order.
	Pieces []piece.Commitment
	agg    *datasegment.Aggregate
}

// New builds the aggregate of pieces, which are in layout order.
func New(dealSize uint64, pieces []piece.Commitment) (*Aggregate, error) {
	var used uint64
	infos := make([]abi.PieceInfo, len(pieces))
	for i, p := range pieces {
		used += p.Padded
		infos[i] = abi.PieceInfo{Size: abi.PaddedPieceSize(p.Padded), PieceCID: p.V1()}
	}
	if !Fits(dealSize, used, len(pieces)) {
		return nil, fmt.Errorf("%w: %d pieces of %d padded bytes in a %d byte deal", ErrDoesNotFit, len(pieces), used, dealSize)
	}
	agg, err := datasegment.NewAggregate(abi.PaddedPieceSize(dealSize), infos)
	if err != nil {
		return nil, fmt.Errorf("frc58: %w", err)
	}
	return &Aggregate{DealSize: dealSize, Pieces: pieces, agg: agg}, nil
}

// Commitment is the aggregate's piece: the deal's root over the whole
// padded deal, whose payload is the full unpadded deal (index included).
func (a *Aggregate) Commitment() piece.Commitment {
	root := a.agg.Tree.Root()
	return piece.Commitment{Root: root, Padded: a.DealSize, Payload: piece.Unpadded(a.DealSize)}
}

// Offsets returns each piece's padded offset in the deal, in layout order.
func (a *Aggregate) Offsets() []uint64 {
	out := make([]uint64, len(a.Pieces))
	for i, e := range a.agg.Index.Entries {
		out[i] = e.Offset
	}
	return out
}

// Proof returns the inclusion proof of the i-th piece in layout order.
func (a *Aggregate) Proof(i int) (*Proof, error) {
	return a.agg.ProofForIndexEntry(i)
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
	var buf bytes.Buffer
	if err := p.MarshalCBOR(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// DecodeProof reads a proof in CBOR form.
func DecodeProof(b []byte) (*Proof, error) {
	var p Proof
	if err := p.UnmarshalCBOR(bytes.NewReader(b)); err != nil {
		return nil, fmt.Errorf("inclusion proof: %w", err)
	}
	return &p, nil
}
