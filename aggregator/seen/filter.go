package seen

import (
	"encoding/binary"
	"math/bits"
)

// The filter is a blocked Bloom filter: a key sets filterProbes bits in
// one 64-byte block, so a lookup touches one cache line. Keys are SHA-256
// prefixes (cidtext.Key), uniform already, so their halves are the hashes.
// It is kept as the bytes of the run's footer, so loading it is one read.
const (
	filterBitsPerKey = 10
	filterProbes     = 7
	filterBlockBytes = 64
)

type filter []byte // len is a multiple of filterBlockBytes

// filterBlocks is the number of blocks a filter for up to n keys has.
func filterBlocks(n uint64) uint64 {
	return max(1, (n*filterBitsPerKey+filterBlockBytes*8-1)/(filterBlockBytes*8))
}

func newFilter(n uint64) filter { return make(filter, filterBlocks(n)*filterBlockBytes) }

func (f filter) blocks() uint64 { return uint64(len(f) / filterBlockBytes) }

func (f filter) probe(k *[16]byte, set bool) bool {
	h1 := binary.BigEndian.Uint64(k[:8])
	h2 := binary.BigEndian.Uint64(k[8:])
	hi, _ := bits.Mul64(h1, f.blocks())
	b := f[hi*filterBlockBytes : (hi+1)*filterBlockBytes]
	a, d := uint32(h2), uint32(h2>>32)|1
	for i := range uint32(filterProbes) {
		pos := (a + i*d) & (filterBlockBytes*8 - 1)
		w, m := pos>>3, byte(1)<<(pos&7)
		if set {
			b[w] |= m
		} else if b[w]&m == 0 {
			return false
		}
	}
	return true
}

func (f filter) add(k *[16]byte)          { f.probe(k, true) }
func (f filter) mayHave(k *[16]byte) bool { return f.probe(k, false) }
