package pack

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"

	dag "github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	uio "github.com/ipfs/boxo/ipld/unixfs/io"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
	mh "github.com/multiformats/go-multihash"
)

// The unixfs-v1-2025 profile (IPIP-499), fixed: it decides every CID.
const (
	ChunkSize     = 1 << 20   // bytes of file content per raw leaf
	MaxLinks      = 1024      // links per file DAG node
	HAMTThreshold = 256 << 10 // a directory whose dag-pb block would pass this becomes a HAMT
	HAMTFanout    = 256
)

// EmptyFileCID is the CID of a file of no bytes: the empty raw block, as
// boxo's importer (and kubo) make it with raw leaves.
var EmptyFileCID = rawCID(nil)

// pbBuilder makes the CIDs of every dag-pb node: CIDv1, sha2-256.
var pbBuilder = cid.Prefix{Version: 1, Codec: cid.DagProtobuf, MhType: mh.SHA2_256, MhLength: -1}

// Block is one block of a DAG, handed to a Sink as soon as it is made.
type Block struct {
	CID  cid.Cid
	Data []byte
}

// Sink takes the blocks of a DAG in the order they are made: every block
// after the blocks it links to. Data is valid only during the call.
type Sink func(Block) error

// Link is a finished subtree of a UnixFS DAG: a raw leaf, a file node, a
// directory, a symlink.
type Link struct {
	CID cid.Cid
	// Tsize is the bytes of every block of the subtree, the dag-pb link's
	// Tsize.
	Tsize uint64
	// Size is the bytes of file content under it (0 for directories and
	// symlinks).
	Size uint64
	// Depth is the height of a file subtree: 0 for a raw leaf, 1 for a
	// node over leaves, and so on.
	Depth int
	// Leaf is the index in its file of the subtree's first leaf.
	Leaf uint64
}

// FileDAG builds the balanced UnixFS DAG of a file, or of a part of it,
// leaf by leaf, as boxo's balanced importer lays it out with the 2025
// profile: a node at depth d over leaves [j·1024^d, (j+1)·1024^d). Every
// node is sunk as soon as it is complete, so a part holds every node that
// lies wholly inside it.
//
// A part cannot know whether the file ends with it, so it never makes a
// node whose span reaches past its last leaf, not even the short last
// node of a file; the assembly (a FileDAG from leaf 0 fed every part's
// Part by Add) makes those and the nodes above the parts, so every block
// of the file's DAG is sunk once across the parts and the assembly.
//
// The root of a file of n leaves has depth 0 if n is 1, else the least D
// with 1024^D ≥ n; nodes short of 1024 children are made only at the end
// of the file, one per depth below the root, as boxo does (a file of
// 1,025 leaves is a root over a full node and a node over one leaf).
type FileDAG struct {
	sink  Sink
	width uint64 // links per node: MaxLinks but in tests
	chunk uint64 // bytes per leaf: ChunkSize but in tests
	first uint64 // index of the first leaf
	next  uint64 // index of the next leaf
	ended bool   // a short leaf or node was taken: it must be the file's last
	// levels[d] holds the finished depth-d subtrees not yet under a node:
	// the children so far of the open node at depth d+1, or, in a part that
	// starts inside that node's span, subtrees that will go to Part.
	levels [][]Link
	// loose holds, in file order, the subtrees a part starting mid-node
	// finished that no node inside the part will join.
	loose []Link
}

// NewFileDAG starts the DAG of a file, or of a part of one whose first
// leaf has index firstLeaf (its byte offset / ChunkSize).
func NewFileDAG(firstLeaf uint64, sink Sink) *FileDAG {
	return newFileDAG(firstLeaf, sink, MaxLinks, ChunkSize)
}

func newFileDAG(firstLeaf uint64, sink Sink, width, chunk uint64) *FileDAG {
	return &FileDAG{sink: sink, width: width, chunk: chunk, first: firstLeaf, next: firstLeaf}
}

// Leaf makes a raw leaf of data (at most ChunkSize bytes; less only for a
// file's last leaf), sinks it, and sinks every node it completes.
func (f *FileDAG) Leaf(data []byte) error {
	if uint64(len(data)) > f.chunk {
		return fmt.Errorf("unixfs: leaf of %d bytes, more than %d", len(data), f.chunk)
	}
	if f.ended {
		return errors.New("unixfs: leaf after the file's short last leaf")
	}
	c := rawCID(data)
	if err := f.sink(Block{CID: c, Data: data}); err != nil {
		return err
	}
	n := uint64(len(data))
	return f.push(Link{CID: c, Tsize: n, Size: n, Leaf: f.next}, n < f.chunk)
}

// rawCID is the CIDv1 raw sha2-256 of data, without the allocations of a
// general multihash builder: it runs once per leaf.
func rawCID(data []byte) cid.Cid {
	var buf [2 + sha256.Size]byte
	buf[0], buf[1] = mh.SHA2_256, sha256.Size
	sum := sha256.Sum256(data)
	copy(buf[2:], sum[:])
	return cid.NewCidV1(cid.Raw, buf[:])
}

// Add takes a subtree built elsewhere (a part's Links), at the next leaf
// index, and sinks every node it completes.
func (f *FileDAG) Add(l Link) error {
	if f.ended {
		return errors.New("unixfs: subtree after the file's short last subtree")
	}
	if l.Leaf != f.next {
		return fmt.Errorf("unixfs: subtree at leaf %d, the next leaf is %d", l.Leaf, f.next)
	}
	span, ok := f.span(l.Depth)
	if !ok || l.Leaf%span != 0 {
		return fmt.Errorf("unixfs: depth-%d subtree at leaf %d is not on a node boundary", l.Depth, l.Leaf)
	}
	for d := 0; d < l.Depth && d < len(f.levels); d++ {
		if len(f.levels[d]) > 0 {
			return fmt.Errorf("unixfs: depth-%d subtree at leaf %d while depth %d is open", l.Depth, l.Leaf, d)
		}
	}
	leaves := uint64(1)
	if l.Depth > 0 {
		leaves = (l.Size + f.chunk - 1) / f.chunk
	}
	if leaves > span || leaves == 0 {
		return fmt.Errorf("unixfs: depth-%d subtree of %d bytes", l.Depth, l.Size)
	}
	short := leaves < span || l.Size < leaves*f.chunk
	return f.pushSpan(l, leaves, short)
}

// span is the number of leaves under a full node of depth d, false when
// it would not fit a leaf index.
func (f *FileDAG) span(d int) (uint64, bool) {
	s := uint64(1)
	for ; d > 0; d-- {
		if s > ^uint64(0)/f.width {
			return 0, false
		}
		s *= f.width
	}
	return s, true
}

func (f *FileDAG) push(l Link, short bool) error { return f.pushSpan(l, 1, short) }

// pushSpan puts l, which covers leaves leaves, at its depth, makes every
// node it completes, and moves to loose the subtrees of a part's leading
// partial nodes once their span is over.
func (f *FileDAG) pushSpan(l Link, leaves uint64, short bool) error {
	for d := l.Depth; ; d++ {
		for len(f.levels) <= d {
			f.levels = append(f.levels, make([]Link, 0, f.width))
		}
		f.levels[d] = append(f.levels[d], l)
		if uint64(len(f.levels[d])) < f.width {
			break
		}
		n, err := f.node(f.levels[d], d+1)
		if err != nil {
			return err
		}
		f.levels[d] = f.levels[d][:0]
		l = n
	}
	f.next += leaves
	f.ended = short
	// A level still holding subtrees when the leaves reach the end of its
	// node's span began mid-span: only a part that starts inside a node
	// has such, and they go to Part as they are.
	span := uint64(1)
	for d := range f.levels {
		if span > ^uint64(0)/f.width {
			break
		}
		span *= f.width
		if f.next%span != 0 {
			break
		}
		if len(f.levels[d]) > 0 {
			f.loose = append(f.loose, f.levels[d]...)
			f.levels[d] = f.levels[d][:0]
		}
	}
	return nil
}

// node makes, with boxo's own types, the UnixFS file node of depth depth
// over children, as boxo's balanced builder does (helpers.FSNodeOverDag):
// links with empty names and the child's Tsize, a blocksize per child of
// its content bytes, the file size set. It sinks the node.
func (f *FileDAG) node(children []Link, depth int) (Link, error) {
	fsn := ft.NewFSNode(ft.TFile)
	nd := new(dag.ProtoNode)
	if err := nd.SetCidBuilder(pbBuilder); err != nil {
		return Link{}, err
	}
	var tsize uint64
	for i := range children {
		c := &children[i]
		if err := nd.AddRawLink("", &ipld.Link{Size: c.Tsize, Cid: c.CID}); err != nil {
			return Link{}, err
		}
		fsn.AddBlockSize(c.Size)
		tsize += c.Tsize
	}
	data, err := fsn.GetBytes()
	if err != nil {
		return Link{}, err
	}
	nd.SetData(data)
	raw, err := nd.EncodeProtobuf(false)
	if err != nil {
		return Link{}, err
	}
	c := nd.Cid()
	if err := f.sink(Block{CID: c, Data: raw}); err != nil {
		return Link{}, err
	}
	return Link{CID: c, Tsize: uint64(len(raw)) + tsize, Size: fsn.FileSize(), Depth: depth, Leaf: children[0].Leaf}, nil
}

// Part ends a part of a file: it returns, in file order, the subtrees the
// part holds that no complete node above joins (what Add takes to build
// the rest of the file elsewhere).
func (f *FileDAG) Part() []Link {
	out := append([]Link(nil), f.loose...)
	for d := len(f.levels) - 1; d >= 0; d-- {
		out = append(out, f.levels[d]...)
	}
	return out
}

// Root ends a whole file whose leaves were all given (by Leaf or Add, from
// leaf 0): it sinks the nodes still open up to the file's root and returns
// the root. A file of no leaves is the empty raw block (EmptyFileCID),
// which it sinks, as boxo's importer adds it.
func (f *FileDAG) Root() (Link, error) {
	if f.first != 0 || len(f.loose) > 0 {
		return Link{}, fmt.Errorf("unixfs: root of a part starting at leaf %d", f.first)
	}
	if f.next == 0 {
		if err := f.sink(Block{CID: EmptyFileCID}); err != nil {
			return Link{}, err
		}
		return Link{CID: EmptyFileCID}, nil
	}
	top := 0
	for span := uint64(1); span < f.next; span *= f.width {
		top++
	}
	for d := 0; d < top; d++ {
		if len(f.levels[d]) == 0 {
			continue
		}
		n, err := f.node(f.levels[d], d+1)
		if err != nil {
			return Link{}, err
		}
		f.levels[d] = f.levels[d][:0]
		if len(f.levels) <= d+1 {
			f.levels = append(f.levels, nil)
		}
		f.levels[d+1] = append(f.levels[d+1], n)
	}
	if len(f.levels[top]) != 1 {
		return Link{}, fmt.Errorf("unixfs: %d subtrees at the root's depth %d", len(f.levels[top]), top)
	}
	return f.levels[top][0], nil
}

// Dir builds one UnixFS directory from its entries: a basic directory, or
// a HAMT shard when the basic node's block would pass HAMTThreshold. It is
// boxo's own dynamic directory (unixfs/io) with the profile's settings on
// the instance, so the global settings of boxo do not matter.
type Dir struct {
	dir uio.Directory
	ds  *sinkDAG
	err error
}

// NewDir starts a directory whose blocks go to sink.
func NewDir(sink Sink) *Dir {
	ds := &sinkDAG{sink: sink, seen: map[cid.Cid]struct{}{}}
	dir, err := uio.NewDirectory(ds,
		uio.WithCidBuilder(pbBuilder),
		uio.WithMaxHAMTFanout(HAMTFanout),
		uio.WithSizeEstimationMode(uio.SizeEstimationBlock))
	if err == nil {
		dir.SetHAMTShardingSize(HAMTThreshold)
	}
	return &Dir{dir: dir, ds: ds, err: err}
}

// Add adds the entry name (one path component) linking to l.
func (d *Dir) Add(ctx context.Context, name string, l Link) error {
	if d.err != nil {
		return d.err
	}
	return d.dir.AddChild(ctx, name, linkNode{c: l.CID, size: l.Tsize})
}

// Finish sinks the directory's blocks (every shard of a HAMT) and returns
// its root.
func (d *Dir) Finish(ctx context.Context) (Link, error) {
	if d.err != nil {
		return Link{}, d.err
	}
	nd, err := d.dir.GetNode()
	if err != nil {
		return Link{}, err
	}
	// A basic directory's node is not added by boxo; a HAMT's root is.
	if err := d.ds.Add(ctx, nd); err != nil {
		return Link{}, err
	}
	size, err := nd.Size()
	if err != nil {
		return Link{}, err
	}
	return Link{CID: nd.Cid(), Tsize: size}, nil
}

// Symlink makes the UnixFS symlink node of target, sinks it and returns it.
func Symlink(target string, sink Sink) (Link, error) {
	data, err := ft.SymlinkData(target)
	if err != nil {
		return Link{}, err
	}
	nd := dag.NodeWithData(data)
	if err := nd.SetCidBuilder(pbBuilder); err != nil {
		return Link{}, err
	}
	raw, err := nd.EncodeProtobuf(false)
	if err != nil {
		return Link{}, err
	}
	c := nd.Cid()
	if err := sink(Block{CID: c, Data: raw}); err != nil {
		return Link{}, err
	}
	return Link{CID: c, Tsize: uint64(len(raw))}, nil
}

// sinkDAG is the DAGService boxo's directory writes to: it sinks each
// block once (a HAMT shard is added both when it is encoded and when its
// parent links to it) and drops the stand-ins of the entries, whose
// blocks were sunk when they were made. The directory never reads.
type sinkDAG struct {
	sink Sink
	seen map[cid.Cid]struct{}
}

var _ ipld.DAGService = (*sinkDAG)(nil)

func (s *sinkDAG) Add(_ context.Context, nd ipld.Node) error {
	if _, ok := nd.(linkNode); ok {
		return nil
	}
	c := nd.Cid()
	if _, ok := s.seen[c]; ok {
		return nil
	}
	s.seen[c] = struct{}{}
	return s.sink(Block{CID: c, Data: nd.RawData()})
}

func (s *sinkDAG) AddMany(ctx context.Context, nds []ipld.Node) error {
	for _, nd := range nds {
		if err := s.Add(ctx, nd); err != nil {
			return err
		}
	}
	return nil
}

func (s *sinkDAG) Get(_ context.Context, c cid.Cid) (ipld.Node, error) {
	return nil, ipld.ErrNotFound{Cid: c}
}

func (s *sinkDAG) GetMany(_ context.Context, cs []cid.Cid) <-chan *ipld.NodeOption {
	out := make(chan *ipld.NodeOption, len(cs))
	for _, c := range cs {
		out <- &ipld.NodeOption{Err: ipld.ErrNotFound{Cid: c}}
	}
	close(out)
	return out
}

func (s *sinkDAG) Remove(context.Context, cid.Cid) error       { return nil }
func (s *sinkDAG) RemoveMany(context.Context, []cid.Cid) error { return nil }

// linkNode stands in for a directory entry's root node: boxo's directory
// reads only its CID and Size, the Tsize it records in the entry's link
// (a dag-pb node's Size is its block plus its links' Tsizes, a raw
// block's its length).
type linkNode struct {
	c    cid.Cid
	size uint64
}

var _ ipld.Node = linkNode{}

func (n linkNode) Cid() cid.Cid                  { return n.c }
func (n linkNode) Size() (uint64, error)         { return n.size, nil }
func (n linkNode) RawData() []byte               { return nil }
func (n linkNode) String() string                { return n.c.String() }
func (n linkNode) Loggable() map[string]any      { return map[string]any{"cid": n.c} }
func (n linkNode) Links() []*ipld.Link           { return nil }
func (n linkNode) Copy() ipld.Node               { return n }
func (n linkNode) Tree(string, int) []string     { return nil }
func (n linkNode) Stat() (*ipld.NodeStat, error) { return &ipld.NodeStat{}, nil }
func (n linkNode) Resolve([]string) (any, []string, error) {
	return nil, nil, errors.New("unixfs: entry stand-in has no content")
}
func (n linkNode) ResolveLink([]string) (*ipld.Link, []string, error) {
	return nil, nil, errors.New("unixfs: entry stand-in has no content")
}
