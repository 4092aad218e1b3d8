package frc58

import (
	"math/bits"
	"runtime"
	"sync"

	"github.com/ferry-dev/ferry/piece"
	"github.com/filecoin-project/go-data-segment/datasegment"
	"github.com/filecoin-project/go-data-segment/merkletree"
)

// tree is the part of an aggregate's FRC-0058 tree that proofs can reach:
// the piece roots, the index entries' level-1 nodes, and every node above
// them. Level 0 holds 32-byte leaves, level depth the root.
//
// No other node is ever needed. A node on a proof path is an ancestor of a
// piece root or an entry; its sibling therefore either holds pieces or
// entries too (and is here), or covers none and is a zero commitment. It
// cannot lie inside a piece, because pieces are aligned blocks that do not
// overlap. So a tree of n pieces holds about 4n nodes (2n above the pieces,
// 2n in the index) instead of go-data-segment's whole sparse tree, and a
// proof is one lookup per level, with no hashing.
type tree struct {
	depth  int
	levels []level // levels[l] for 0 ≤ l ≤ depth
	// entries is the level-1 index of the first index entry.
	entries uint64
}

// level is the occupied nodes of one level, in index order, grouped in
// runs of consecutive indexes. A layout in ferry's order (largest piece
// first) has at most two runs per level: the pieces and the index.
type level struct {
	nodes []node
	runs  []run
}

// run is a maximal range of consecutive occupied indexes, starting at
// level index start, whose first node is nodes[off].
type run struct {
	start uint64
	off   int
}

// levelOf is the level of a subtree of size padded bytes.
func levelOf(padded uint64) int {
	return bits.TrailingZeros64(padded / merkletree.NodeSize)
}

// nodeShift is log2(merkletree.NodeSize).
const nodeShift = 5

// indexAt is the index, within level l, of the node whose subtree starts
// at padded byte offset.
func indexAt(offset uint64, l int) uint64 { return offset >> (l + nodeShift) }

// newTree builds the tree of a deal of dealSize holding pieces at offsets
// (already placed and checked to fit).
func newTree(dealSize uint64, pieces []piece.Commitment, offsets []uint64) *tree {
	t := &tree{
		depth:   levelOf(dealSize),
		entries: (dealSize - IndexReserve(dealSize)) / datasegment.EntrySize,
	}
	seeds := pieceLevels(t.depth, pieces, offsets)
	// Pieces are at least 128 bytes, level 2 and up, so levels 0 and 1 hold
	// no piece root; level 1 holds the index entries.
	seeds[1] = indexLevel(t.entries, pieces, offsets)
	t.levels = make([]level, t.depth+1)
	for l := 1; l <= t.depth; l++ {
		t.grow(l, &seeds[l])
		seeds[l] = level{} // the tree has what it needs: let the rest go
	}
	return t
}

// pieceLevels is the piece roots sorted into their levels. Placement
// offsets grow in piece order, so each level comes out in index order.
func pieceLevels(depth int, pieces []piece.Commitment, offsets []uint64) []level {
	seeds := make([]level, depth+1)
	count := make([]int, depth+1)
	for _, p := range pieces {
		count[levelOf(p.Padded)]++
	}
	for l, n := range count {
		seeds[l].nodes = make([]node, 0, n)
	}
	for i, p := range pieces {
		seedPiece(seeds, p, offsets[i])
	}
	return seeds
}

// seedPiece adds a piece root to its level.
func seedPiece(seeds []level, p piece.Commitment, offset uint64) {
	l := levelOf(p.Padded)
	root := node(p.Root)
	if root == (node{}) {
		// go-data-segment stores an all-zero node as "empty" and reads it
		// back as the zero commitment of its level; do the same so that the
		// roots agree even for this degenerate piece.
		root = zeroComms[l]
	}
	seeds[l].push(indexAt(offset, l), root)
}

// indexLevel is the level-1 nodes of the index entries: entry i sits at
// the i-th 64-byte slot of the index area, which ends the deal, at level-1
// index start+i.
func indexLevel(start uint64, pieces []piece.Commitment, offsets []uint64) level {
	if len(pieces) == 0 {
		return level{}
	}
	nodes := make([]node, len(pieces))
	parallel(len(nodes), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			nodes[i] = entryLeaf(&pieces[i].Root, offsets[i], pieces[i].Padded)
		}
	})
	return level{nodes: nodes, runs: []run{{start: start}}}
}

// push appends n at index idx, which lies beyond every index held.
func (lv *level) push(idx uint64, n node) {
	lv.runs = addRun(lv.runs, len(lv.nodes), idx, 1)
	lv.nodes = append(lv.nodes, n)
}

// addRun records count nodes at indexes from start, placed at position
// held (after every node already recorded). It extends the last run when
// they touch, so runs stay maximal.
func addRun(runs []run, held int, start uint64, count int) []run {
	if k := len(runs) - 1; k >= 0 {
		end := runs[k].start + uint64(held-runs[k].off)
		if start < end {
			panic("frc58: overlapping tree nodes") // place() prevents it
		}
		if start == end {
			return runs
		}
	}
	return append(runs, run{start: start, off: held})
}

// runNodes is the nodes of run k.
func (lv *level) runNodes(k int) []node {
	end := len(lv.nodes)
	if k+1 < len(lv.runs) {
		end = lv.runs[k+1].off
	}
	return lv.nodes[lv.runs[k].off:end]
}

// grow computes level l: the parents of level l-1 merged, in index order,
// with the piece roots that sit at level l. It first lays the level out,
// merging the two sorted sources into runs, then allocates the level's
// nodes once and fills them, so that each level is one flat slice and a
// long run of parents can be hashed by several goroutines.
func (t *tree) grow(l int, seeds *level) {
	below := &t.levels[l-1]
	if len(below.runs) == 0 {
		t.levels[l] = *seeds
		return
	}
	var (
		out  level
		held int
		fill []func(nodes []node)
	)
	add := func(start uint64, count int, f func(dst []node)) {
		out.runs = addRun(out.runs, held, start, count)
		pos := held
		held += count
		fill = append(fill, func(nodes []node) { f(nodes[pos : pos+count]) })
	}
	i, j := 0, 0
	for i < len(below.runs) || j < len(seeds.runs) {
		if j == len(seeds.runs) || (i < len(below.runs) && below.runs[i].start>>1 < seeds.runs[j].start) {
			src, first := below.runNodes(i), below.runs[i].start
			last := first + uint64(len(src)) - 1
			count := int(last>>1-first>>1) + 1
			add(first>>1, count, func(dst []node) { hashParents(dst, src, int(first&1), &zeroComms[l-1]) })
			i++
		} else {
			src := seeds.runNodes(j)
			add(seeds.runs[j].start, len(src), func(dst []node) { copy(dst, src) })
			j++
		}
	}
	out.nodes = make([]node, held)
	for _, f := range fill {
		f(out.nodes)
	}
	t.levels[l] = out
}

// hashParents computes dst, the parents of a run of nodes src. lead is 1
// when src starts with a right child, whose left sibling is empty; a right
// child missing at the end is empty too. Empty siblings are zero.
func hashParents(dst, src []node, lead int, zero *node) {
	parallel(len(dst), func(lo, hi int) {
		for j := lo; j < hi; j++ {
			left, right := zero, zero
			if c := 2*j - lead; c >= 0 {
				left = &src[c]
			}
			if c := 2*j + 1 - lead; c < len(src) {
				right = &src[c]
			}
			dst[j] = hashPair(left, right)
		}
	})
}

// at is the node at index idx of level l.
func (t *tree) at(l int, idx uint64) *node {
	lv := &t.levels[l]
	// Find the last run starting at or before idx.
	lo, hi := 0, len(lv.runs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if lv.runs[m].start <= idx {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if k := lo - 1; k >= 0 {
		nodes := lv.runNodes(k)
		if d := idx - lv.runs[k].start; d < uint64(len(nodes)) {
			return &nodes[d]
		}
	}
	return &zeroComms[l]
}

// root is the deal's root.
func (t *tree) root() node { return *t.at(t.depth, 0) }

// path appends to dst the siblings on the way from node idx of level l to
// the root, bottom up: a merkletree.ProofData path.
func (t *tree) path(dst []node, l int, idx uint64) []node {
	for ; l < t.depth; l++ {
		dst = append(dst, *t.at(l, idx^1))
		idx >>= 1
	}
	return dst
}

// minChunk is the fewest hashes worth handing to another goroutine; below
// it starting one costs more than it saves.
var minChunk = 2048

// parallel runs fn over [0,n) split among up to GOMAXPROCS goroutines.
func parallel(n int, fn func(lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), n/minChunk)
	if workers <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := n*w/workers, n*(w+1)/workers
		wg.Go(func() { fn(lo, hi) })
	}
	wg.Wait()
}
