package pack

import (
	"context"
	"errors"

	"github.com/ipfs/go-cid"
)

// The unixfs-v1-2025 profile (IPIP-499), fixed: it decides every CID.
const (
	ChunkSize     = 1 << 20   // bytes of file content per raw leaf
	MaxLinks      = 1024      // links per file DAG node
	HAMTThreshold = 256 << 10 // a directory whose dag-pb block would pass this becomes a HAMT
	HAMTFanout    = 256
)

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
type FileDAG struct {
	sink Sink
	next uint64 // index of the next leaf
	// TODO(unixfs): pending children per level
}

// NewFileDAG starts the DAG of a file, or of a part of one whose first
// leaf has index firstLeaf (its byte offset / ChunkSize).
func NewFileDAG(firstLeaf uint64, sink Sink) *FileDAG {
	return &FileDAG{sink: sink, next: firstLeaf}
}

// Leaf makes a raw leaf of data (at most ChunkSize bytes; less only for a
// file's last leaf), sinks it, and sinks every node it completes.
func (f *FileDAG) Leaf(data []byte) error { return errors.New("TODO") }

// Add takes a subtree built elsewhere (a part's Links), at the next leaf
// index, and sinks every node it completes.
func (f *FileDAG) Add(l Link) error { return errors.New("TODO") }

// Part ends a part of a file: it returns, in file order, the subtrees the
// part holds that no complete node above joins (what Add takes to build
// the rest of the file elsewhere).
func (f *FileDAG) Part() []Link { return nil }

// Root ends a whole file whose leaves were all given (by Leaf or Add, from
// leaf 0): it sinks the nodes still open up to the file's root and returns
// the root. A file of no leaves is the empty raw block.
func (f *FileDAG) Root() (Link, error) { return Link{}, errors.New("TODO") }

// Dir builds one UnixFS directory from its entries: a basic directory, or
// a HAMT shard when the basic node's block would pass HAMTThreshold.
type Dir struct {
	sink Sink
}

// NewDir starts a directory whose blocks go to sink.
func NewDir(sink Sink) *Dir { return &Dir{sink: sink} }

// Add adds the entry name (one path component) linking to l.
func (d *Dir) Add(ctx context.Context, name string, l Link) error { return errors.New("TODO") }

// Finish sinks the directory's blocks (every shard of a HAMT) and returns
// its root.
func (d *Dir) Finish(ctx context.Context) (Link, error) { return Link{}, errors.New("TODO") }

// Symlink makes the UnixFS symlink node of target, sinks it and returns it.
func Symlink(target string, sink Sink) (Link, error) { return Link{}, errors.New("TODO") }
