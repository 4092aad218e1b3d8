package frc58

// The sizing of a deal: what its index reserves and what room that leaves.

import (
	"math/bits"

	"github.com/filecoin-project/go-data-segment/datasegment"
	"github.com/filecoin-project/go-state-types/abi"
)

// MaxEntries is the number of index entries a deal of dealSize reserves
// room for (FRC-0058), as go-data-segment computes it.
func MaxEntries(dealSize uint64) int {
	return int(datasegment.MaxIndexEntriesInDeal(abi.PaddedPieceSize(dealSize)))
}

// IndexReserve is the padded size at the end of a deal reserved for the
// data segment index: 16 MiB for a 32 GiB deal.
func IndexReserve(dealSize uint64) uint64 {
	return uint64(MaxEntries(dealSize)) * datasegment.EntrySize
}

// MaxPiece is the largest padded piece that fits a deal beside its index.
func MaxPiece(dealSize uint64) uint64 {
	room := dealSize - IndexReserve(dealSize)
	return 1 << (bits.Len64(room) - 1)
}
