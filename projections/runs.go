package projections

import (
	"cmp"
	"encoding/binary"
	"math"
	"math/bits"
	"slices"
)

// A run is part of the CID index as stored: entries of a 16-byte key and
// a big-endian car number, sorted by key, in one value.
type run []byte

const entryLen = len(cidKey{}) + 8

// maxRun bounds the entries a merge makes (48 MiB): past it runs stay
// apart, which costs a lookup one more run, instead of a merge holding
// ever larger copies in memory.
var maxRun = 1 << 21 // a var so tests can reach it

func (r run) len() int { return len(r) / entryLen }

// at returns entry i's key as two big-endian halves, for comparing.
func (r run) at(i int) (hi, lo uint64) {
	e := r[i*entryLen:]
	return binary.BigEndian.Uint64(e), binary.BigEndian.Uint64(e[8:])
}

func (r run) num(i int) uint64 { return binary.BigEndian.Uint64(r[i*entryLen+len(cidKey{}):]) }

// less reports whether the key (hi, lo) sorts before (khi, klo).
func less(hi, lo, khi, klo uint64) bool { return hi < khi || (hi == khi && lo < klo) }

// find returns the car number stored for k.
//
// Keys are the leading bytes of SHA-256 sums, so uniform: among n of them
// the rank of k is binomial around n·k/2^64 with a standard deviation
// under √n/2. The search starts with the window of four of those around
// that place, and widens to the whole run when an entry at the window's
// edge shows that k lies outside it (keys that are not uniform stay
// correct, only slower).
func (r run) find(k cidKey) (uint64, bool) {
	n := r.len()
	if n == 0 {
		return 0, false
	}
	khi, klo := binary.BigEndian.Uint64(k[:8]), binary.BigEndian.Uint64(k[8:])
	guess, _ := bits.Mul64(khi, uint64(n))
	d := 2*int(math.Sqrt(float64(n))) + 8
	lo, hi := max(int(guess)-d, 0), min(int(guess)+d, n)
	// k's place is in [lo, hi) when the entry before lo sorts before k and
	// the entry at hi after it.
	if lo > 0 {
		if h, l := r.at(lo - 1); !less(h, l, khi, klo) {
			lo = 0
		}
	}
	if hi < n {
		if h, l := r.at(hi); !less(khi, klo, h, l) {
			hi = n
		}
	}
	// The first entry in [lo, hi) not before k.
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if h, l := r.at(mid); less(h, l, khi, klo) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo < n {
		if h, l := r.at(lo); h == khi && l == klo {
			return r.num(lo), true
		}
	}
	return 0, false
}

// sortedRun makes a run of the entries of sets, which share no key (a
// key is added once, see cidIndex).
func sortedRun(sets ...map[cidKey]uint64) run {
	n := 0
	for _, m := range sets {
		n += len(m)
	}
	entries := make([]entry, 0, n)
	for _, m := range sets {
		for k, num := range m {
			entries = append(entries, entry{binary.BigEndian.Uint64(k[:8]), binary.BigEndian.Uint64(k[8:]), num})
		}
	}
	slices.SortFunc(entries, func(a, b entry) int {
		if c := cmp.Compare(a.hi, b.hi); c != 0 {
			return c
		}
		return cmp.Compare(a.lo, b.lo)
	})
	r := make(run, n*entryLen)
	for i, e := range entries {
		binary.BigEndian.PutUint64(r[i*entryLen:], e.hi)
		binary.BigEndian.PutUint64(r[i*entryLen+8:], e.lo)
		binary.BigEndian.PutUint64(r[i*entryLen+16:], e.num)
	}
	return r
}

// entry is a run's entry: its key as two big-endian halves, and its number.
type entry struct{ hi, lo, num uint64 }

// mergeRuns returns the entries of a and b in one run, in a new buffer.
func mergeRuns(a, b run) run {
	out := make(run, 0, len(a)+len(b))
	i, j := 0, 0
	for i < a.len() && j < b.len() {
		ah, al := a.at(i)
		bh, bl := b.at(j)
		if less(bh, bl, ah, al) {
			out = append(out, b[j*entryLen:(j+1)*entryLen]...)
			j++
		} else {
			out = append(out, a[i*entryLen:(i+1)*entryLen]...)
			i++
		}
	}
	out = append(out, a[i*entryLen:]...)
	return append(out, b[j*entryLen:]...)
}
