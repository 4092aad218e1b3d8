package seen

import (
	"encoding/binary"
	"math/bits"
)

// The filter is a blocked Bloom filter: a key sets filterProbes bits in
// one 512-bit block, so a lookup touches one cache line. Keys are SHA-256
// prefixes (cidtext.Key), uniform already, so their halves are the hashes.
const (
	filterBitsPerKey = 10
	filterProbes     = 7
	filterBlockWords = 8 // 512 bits
	filterBlockBytes = filterBlockWords * 8
)

type filter []uint64 // len is a multiple of filterBlockWords

// filterBlocks is the number of blocks a filter for up to n keys has.
func filterBlocks(n uint64) uint64 {
	return max(1, (n*filterBitsPerKey+511)/512)
}

func newFilter(n uint64) filter { return make(filter, filterBlocks(n)*filterBlockWords) }

func (f filter) probe(k *[16]byte, set bool) bool {
	h1 := binary.BigEndian.Uint64(k[:8])
	h2 := binary.BigEndian.Uint64(k[8:])
	blocks := uint64(len(f) / filterBlockWords)
	hi, _ := bits.Mul64(h1, blocks)
	b := f[hi*filterBlockWords : (hi+1)*filterBlockWords]
	a, d := uint32(h2), uint32(h2>>32)|1
	for i := range uint32(filterProbes) {
		pos := (a + i*d) & 511
		w, m := pos>>6, uint64(1)<<(pos&63)
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
