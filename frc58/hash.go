package frc58

import (
	"crypto/sha256"
	"encoding/binary"

	"github.com/filecoin-project/go-data-segment/datasegment"
	"github.com/filecoin-project/go-data-segment/merkletree"
)

// node is one 32-byte node of the tree. It is go-data-segment's type so
// that proof paths need no conversion.
type node = merkletree.Node

// maxLevel is the highest tree level with a zero commitment, as in
// go-data-segment (levels 0 to 63); a deal is at most 2^63 bytes, level 58.
const maxLevel = 63

// zeroComms[l] is the root of an all-zero subtree at level l: the value of
// every node that covers no piece and no index entry.
var zeroComms = makeZeroComms()

func makeZeroComms() *[maxLevel + 1]node {
	var z [maxLevel + 1]node
	for l := 1; l <= maxLevel; l++ {
		z[l] = hashPair(&z[l-1], &z[l-1])
	}
	return &z
}

// hashPair is the parent of two nodes: sha256 of both, truncated to 254
// bits so that every node is a valid Fr32 field element.
//
// crypto/sha256 rather than minio/sha256-simd: both use the SHA extensions
// on amd64 and measured the same on 64-byte inputs (~120 ns), so the
// standard library wins by adding no dependency.
func hashPair(left, right *node) node {
	var buf [2 * merkletree.NodeSize]byte
	copy(buf[:merkletree.NodeSize], left[:])
	copy(buf[merkletree.NodeSize:], right[:])
	return truncatedHash(buf[:])
}

func truncatedHash(b []byte) node {
	n := node(sha256.Sum256(b))
	n[merkletree.NodeSize-1] &= 0b00111111
	return n
}

// indexEntry is the 64-byte data segment index entry of a piece, byte for
// byte what go-data-segment's SegmentDesc.SerializeFr32 writes: the piece
// root, its padded offset and padded size (little-endian), and a checksum.
// The checksum is sha256 of the entry with a zero checksum field, its first
// 16 bytes truncated to 126 bits.
func indexEntry(root *[32]byte, offset, size uint64) [datasegment.EntrySize]byte {
	var e [datasegment.EntrySize]byte
	copy(e[:32], root[:])
	binary.LittleEndian.PutUint64(e[32:], offset)
	binary.LittleEndian.PutUint64(e[40:], size)
	sum := sha256.Sum256(e[:])
	copy(e[48:], sum[:datasegment.ChecksumSize])
	e[datasegment.EntrySize-1] &= 0b00111111
	return e
}

// entryLeaf is the level-1 node of an index entry: the parent of the
// entry's two 32-byte leaves.
func entryLeaf(root *[32]byte, offset, size uint64) node {
	e := indexEntry(root, offset, size)
	return truncatedHash(e[:])
}
