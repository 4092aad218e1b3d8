package frc58

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/ferry-dev/ferry/piece"
	"github.com/filecoin-project/go-data-segment/datasegment"
	"github.com/filecoin-project/go-data-segment/merkletree"
)

// ErrBadStored is returned, wrapped, by OpenStored for bytes that are not
// an aggregate's stored form, and by Stored.Proof for a piece whose stored
// level is impossible.
var ErrBadStored = errors.New("malformed stored aggregate")

// The stored form, version 1, all integers little-endian:
//
//	header   version u8, depth u8, deal size u64, pieces u64, entries u64
//	levels   per level 0..depth: runs u64, nodes u64, byte offset u64 of
//	         the level's runs
//	pieces   padded offset u64 per piece, then level u8 per piece
//	per level, in order and back to back: the runs (start u64, off u64),
//	         then the nodes (32 bytes each)
//
// Fixed widths let a reader find any field by arithmetic, so a proof reads
// only the level headers, each level's runs and one node per level. Run
// offsets are u64, not u32, so that AppendBinary cannot overflow for any
// aggregate; runs are few (two per level in ferry's layout), so it costs
// nothing that shows.
const (
	storedVersion = 1

	hdrVersion  = 0
	hdrDepth    = 1
	hdrDealSize = 2
	hdrPieces   = 10
	hdrEntries  = 18
	hdrSize     = 26

	levelHdrSize = 24 // runs, nodes, offset
	runSize      = 16 // start, off
	pieceSize    = 9  // offset, level
)

var le = binary.LittleEndian

// AppendBinary appends the aggregate's stored form to dst: deal size, the
// pieces' padded offsets and levels in layout order, and the tree's nodes
// (levels with their runs), so that a Stored reads any proof from it in
// place.
func (a *Aggregate) AppendBinary(dst []byte) []byte {
	t := a.tree
	n := len(a.offsets)
	pos := hdrSize + (t.depth+1)*levelHdrSize + n*pieceSize
	size := pos
	for _, lv := range t.levels {
		size += len(lv.runs)*runSize + len(lv.nodes)*merkletree.NodeSize
	}
	dst = slices.Grow(dst, size)

	dst = append(dst, storedVersion, byte(t.depth))
	dst = le.AppendUint64(dst, a.DealSize)
	dst = le.AppendUint64(dst, uint64(n))
	dst = le.AppendUint64(dst, t.entries)
	for _, lv := range t.levels {
		dst = le.AppendUint64(dst, uint64(len(lv.runs)))
		dst = le.AppendUint64(dst, uint64(len(lv.nodes)))
		dst = le.AppendUint64(dst, uint64(pos))
		pos += len(lv.runs)*runSize + len(lv.nodes)*merkletree.NodeSize
	}
	for _, off := range a.offsets {
		dst = le.AppendUint64(dst, off)
	}
	dst = append(dst, a.levels...)
	for _, lv := range t.levels {
		for _, r := range lv.runs {
			dst = le.AppendUint64(dst, r.start)
			dst = le.AppendUint64(dst, uint64(r.off))
		}
		for i := range lv.nodes {
			dst = append(dst, lv.nodes[i][:]...)
		}
	}
	return dst
}

// Stored is an aggregate read in place from its AppendBinary form. It
// copies nothing: its methods read b, which the caller must keep valid and
// unchanged while using it.
//
// OpenStored checks every length and run, so no method indexes outside b
// however b was corrupted; a corrupted node gives a proof that does not
// verify, not a crash.
type Stored struct {
	b        []byte
	depth    int
	n        int
	dealSize uint64
	entries  uint64
	levelsAt int // first piece level; the offsets start at levelsAt-8n
}

// OpenStored checks b's header and sizes and returns a Stored over it, or
// an error wrapping ErrBadStored. It reads the header and every level's
// runs, not the pieces or nodes, so it is cheap enough to call per request.
func OpenStored(b []byte) (Stored, error) {
	bad := func(format string, args ...any) (Stored, error) {
		return Stored{}, fmt.Errorf("frc58: stored aggregate of %d bytes: %s: %w", len(b), fmt.Sprintf(format, args...), ErrBadStored)
	}
	if len(b) < hdrSize {
		return bad("shorter than the header")
	}
	if v := b[hdrVersion]; v != storedVersion {
		return bad("version %d", v)
	}
	s := Stored{
		b:        b,
		depth:    int(b[hdrDepth]),
		dealSize: le.Uint64(b[hdrDealSize:]),
	}
	if !piece.ValidPadded(s.dealSize) || IndexReserve(s.dealSize) > s.dealSize {
		return bad("deal size %d", s.dealSize)
	}
	if want := levelOf(s.dealSize); s.depth != want {
		return bad("depth %d for a deal of depth %d", s.depth, want)
	}
	if n := le.Uint64(b[hdrPieces:]); n > uint64(MaxEntries(s.dealSize)) {
		return bad("%d pieces in a deal of %d entries", n, MaxEntries(s.dealSize))
	}
	s.n = int(le.Uint64(b[hdrPieces:])) // ≤ MaxEntries < 2^47
	if s.entries = le.Uint64(b[hdrEntries:]); s.entries != (s.dealSize-IndexReserve(s.dealSize))/datasegment.EntrySize {
		return bad("index at entry %d", s.entries)
	}
	pos := hdrSize + (s.depth+1)*levelHdrSize // depth ≤ 58
	if pos > len(b) {
		return bad("level headers past the end")
	}
	if s.n > (len(b)-pos)/pieceSize {
		return bad("%d pieces past the end", s.n)
	}
	s.levelsAt = pos + 8*s.n
	pos += pieceSize * s.n
	for l := 0; l <= s.depth; l++ {
		runs, nodes, at := s.levelHeader(l)
		if at != uint64(pos) {
			return bad("level %d at byte %d, want %d", l, at, pos)
		}
		left := uint64(len(b) - pos)
		if runs > left/runSize || nodes > (left-runs*runSize)/merkletree.NodeSize {
			return bad("level %d of %d runs and %d nodes past the end", l, runs, nodes)
		}
		if (runs == 0) != (nodes == 0) {
			return bad("level %d of %d runs and %d nodes", l, runs, nodes)
		}
		var prevStart, prevOff uint64
		for k := range int(runs) {
			start, off := le.Uint64(b[pos+k*runSize:]), le.Uint64(b[pos+k*runSize+8:])
			if k == 0 && off != 0 || k > 0 && (start <= prevStart || off <= prevOff) || off >= nodes {
				return bad("level %d run %d at index %d, node %d", l, k, start, off)
			}
			prevStart, prevOff = start, off
		}
		pos += int(runs)*runSize + int(nodes)*merkletree.NodeSize
	}
	if pos != len(b) {
		return bad("%d bytes past the end", len(b)-pos)
	}
	return s, nil
}

// levelHeader is level l's run and node counts and where its runs start.
func (s Stored) levelHeader(l int) (runs, nodes, at uint64) {
	h := s.b[hdrSize+l*levelHdrSize:]
	return le.Uint64(h), le.Uint64(h[8:]), le.Uint64(h[16:])
}

// DealSize is the aggregate's padded deal size.
func (s Stored) DealSize() uint64 { return s.dealSize }

// Len is the number of pieces.
func (s Stored) Len() int { return s.n }

// Offset is the padded offset of the i-th piece in layout order, or 0 for
// an i outside the pieces: a stored aggregate must not panic on a bad
// request.
func (s Stored) Offset(i int) uint64 {
	if i < 0 || i >= s.n {
		return 0
	}
	return le.Uint64(s.b[s.levelsAt-8*(s.n-i):])
}

// Commitment is the aggregate's piece, as Aggregate.Commitment.
func (s Stored) Commitment() piece.Commitment {
	if s.b == nil { // the zero Stored, which OpenStored never returns
		return piece.Commitment{}
	}
	return piece.Commitment{Root: s.level(s.depth).at(s.b, s.depth, 0), Padded: s.dealSize, Payload: piece.Unpadded(s.dealSize)}
}

// Proof returns the inclusion proof of the i-th piece in layout order, the
// same as Aggregate.Proof, or ErrNoPiece. It reads one node per tree level
// for each of its two paths, walking the levels once for both.
func (s Stored) Proof(i int) (*Proof, error) {
	if i < 0 || i >= s.n {
		return nil, fmt.Errorf("frc58: proof %d of %d pieces: %w", i, s.n, ErrNoPiece)
	}
	l := int(s.b[s.levelsAt+i])
	if l > s.depth {
		return nil, fmt.Errorf("frc58: piece %d at level %d of a tree of depth %d: %w", i, l, s.depth, ErrBadStored)
	}
	idx := indexAt(s.Offset(i), l)
	entry := s.entries + uint64(i)
	// The subtree path climbs from the piece's level, the index path from
	// level 1 (an entry's node), as in Aggregate.proof.
	buf := make([]node, 2*s.depth-l-1)
	sub, ind := buf[:s.depth-l:s.depth-l], buf[s.depth-l:]
	// First where each node is, then the nodes: the nodes lie a page or
	// more apart, mostly outside the caches, and loads that do not wait on
	// each other's branches are in flight together, where a search and a
	// load per level wait for each miss in turn.
	var at [2 * 64]int // byte offset of buf[k]'s node, or -1-level for a zero commitment
	for lv := min(l, 1); lv < s.depth; lv++ {
		v := s.level(lv)
		if lv >= l {
			at[lv-l] = v.find(s.b, lv, (idx>>(lv-l))^1)
		}
		if lv >= 1 {
			at[s.depth-l+lv-1] = v.find(s.b, lv, (entry>>(lv-1))^1)
		}
	}
	for k := range buf {
		if p := at[k]; p >= 0 {
			buf[k] = node(s.b[p : p+merkletree.NodeSize])
		} else {
			buf[k] = zeroComms[-1-p]
		}
	}
	return &Proof{
		ProofSubtree: merkletree.ProofData{Path: sub, Index: idx},
		ProofIndex:   merkletree.ProofData{Path: ind, Index: entry},
	}, nil
}

// storedLevel is one level's header: its runs and nodes, the runs at byte
// runsAt, the nodes after them.
type storedLevel struct{ runs, nodes, runsAt uint64 }

func (s Stored) level(l int) storedLevel {
	runs, nodes, at := s.levelHeader(l)
	return storedLevel{runs, nodes, at}
}

// at is tree.at over a stored level l of b: the node at index idx.
func (v storedLevel) at(b []byte, l int, idx uint64) node {
	if p := v.find(b, l, idx); p >= 0 {
		return node(b[p : p+merkletree.NodeSize])
	}
	return zeroComms[l]
}

// find is where in b the node at index idx of level l is, by binary
// search over the level's runs, or -1-l when the level holds no node
// there (a zero commitment).
func (v storedLevel) find(b []byte, l int, idx uint64) int {
	r := b[v.runsAt : v.runsAt+v.runs*runSize]
	// Find the last run starting at or before idx.
	lo, hi := 0, int(v.runs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if le.Uint64(r[m*runSize:]) <= idx {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if k := lo - 1; k >= 0 {
		start, off, end := le.Uint64(r[k*runSize:]), le.Uint64(r[k*runSize+8:]), v.nodes
		if k+1 < int(v.runs) {
			end = le.Uint64(r[(k+1)*runSize+8:])
		}
		if d := idx - start; d < end-off {
			return int(v.runsAt + v.runs*runSize + (off+d)*merkletree.NodeSize)
		}
	}
	return -1 - l
}
