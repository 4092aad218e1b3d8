package ipfstest

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	chunker "github.com/ipfs/boxo/chunker"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs/importer/balanced"
	ihelper "github.com/ipfs/boxo/ipld/unixfs/importer/helpers"
	uio "github.com/ipfs/boxo/ipld/unixfs/io"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	ipld "github.com/ipfs/go-ipld-format"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/datamodel"
	"github.com/ipld/go-ipld-prime/fluent/qp"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	"github.com/ipld/go-ipld-prime/node/basicnode"
	"github.com/multiformats/go-multicodec"
	"github.com/multiformats/go-multihash"
)

// Store is a blockstore with the DAG builders. Every builder records the
// blocks it made, so that Blocks(root) is what the importer produced.
type Store struct {
	Blockstore blockstore.Blockstore
	Service    blockservice.BlockService
	DAGs       ipld.DAGService
}

// NewStore returns an empty store in memory.
func NewStore() *Store {
	return NewStoreOn(blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore())))
}

// NewStoreOn returns a store on bs (for example a FileBlockstore, for
// DAGs larger than memory should hold).
func NewStoreOn(bs blockstore.Blockstore) *Store {
	svc := blockservice.New(bs, nil) // offline: what it lacks is not found
	return &Store{Blockstore: bs, Service: svc, DAGs: merkledag.NewDAGService(svc)}
}

// DAG is a DAG a builder made.
type DAG struct {
	Root cid.Cid
	// Blocks are the DAG's distinct blocks, as the builder stored them.
	Blocks []blocks.Block
}

// Block returns the block of c in d, or nil.
func (d *DAG) Block(c cid.Cid) blocks.Block {
	for _, b := range d.Blocks {
		if b.Cid().Equals(c) {
			return b
		}
	}
	return nil
}

// recorder is a DAGService that records what it is given.
type recorder struct {
	ipld.DAGService
	seen  map[cid.Cid]bool
	added []blocks.Block
}

func (r *recorder) Add(ctx context.Context, n ipld.Node) error {
	if !r.seen[n.Cid()] {
		r.seen[n.Cid()] = true
		r.added = append(r.added, n)
	}
	return r.DAGService.Add(ctx, n)
}

func (r *recorder) AddMany(ctx context.Context, ns []ipld.Node) error {
	for _, n := range ns {
		if err := r.Add(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) recorder() *recorder {
	return &recorder{DAGService: s.DAGs, seen: map[cid.Cid]bool{}}
}

// cidV1 is how files and directories are built: CIDv1, sha2-256, as
// `ipfs add --cid-version=1` does.
var cidV1 = merkledag.V1CidPrefix()

// FileOptions shape a UnixFS file.
type FileOptions struct {
	// ChunkSize is the size of a leaf (default 256 KiB, the importer's).
	ChunkSize int64
	// RawLeaves stores leaves as raw blocks; otherwise as dag-pb UnixFS
	// nodes.
	RawLeaves bool
	// MaxLinks bounds an inner node's links (default the importer's 174);
	// small values make deep trees from little data.
	MaxLinks int
}

// Bytes returns n pseudo-random bytes from seed: content that does not
// deduplicate.
func Bytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// File imports data as a UnixFS file with boxo's balanced importer.
func (s *Store) File(t testing.TB, data []byte, o FileOptions) *DAG {
	t.Helper()
	rec := s.recorder()
	root, err := s.importFile(rec, data, o)
	if err != nil {
		t.Fatalf("ipfstest: import file: %v", err)
	}
	return &DAG{Root: root.Cid(), Blocks: rec.added}
}

func (s *Store) importFile(dag ipld.DAGService, data []byte, o FileOptions) (ipld.Node, error) {
	size := o.ChunkSize
	if size == 0 {
		size = chunker.DefaultBlockSize
	}
	links := o.MaxLinks
	if links == 0 {
		links = ihelper.DefaultLinksPerBlock
	}
	params := ihelper.DagBuilderParams{Dagserv: dag, Maxlinks: links, RawLeaves: o.RawLeaves, CidBuilder: cidV1}
	db, err := params.New(chunker.NewSizeSplitter(bytes.NewReader(data), size))
	if err != nil {
		return nil, err
	}
	return balanced.Layout(db)
}

// Entry is a file or directory in a tree: Data for a file, Dir for a
// directory.
type Entry struct {
	Name string
	Data []byte
	Dir  []Entry
}

// Dir imports a tree of directories and files; each directory is a
// plain dag-pb UnixFS directory, or a HAMT when hamt is true.
func (s *Store) Dir(t testing.TB, entries []Entry, o FileOptions, hamt bool) *DAG {
	t.Helper()
	rec := s.recorder()
	root, err := s.importDir(rec, entries, o, hamt)
	if err != nil {
		t.Fatalf("ipfstest: import directory: %v", err)
	}
	return &DAG{Root: root.Cid(), Blocks: rec.added}
}

func (s *Store) importDir(dag ipld.DAGService, entries []Entry, o FileOptions, hamt bool) (ipld.Node, error) {
	ctx := context.Background()
	var dir uio.Directory
	var err error
	if hamt {
		dir, err = uio.NewHAMTDirectory(dag, 0, uio.WithCidBuilder(cidV1))
	} else {
		dir, err = uio.NewBasicDirectory(dag, uio.WithCidBuilder(cidV1))
	}
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		var n ipld.Node
		if e.Dir != nil {
			n, err = s.importDir(dag, e.Dir, o, hamt)
		} else {
			n, err = s.importFile(dag, e.Data, o)
		}
		if err != nil {
			return nil, err
		}
		if err := dir.AddChild(ctx, e.Name, n); err != nil {
			return nil, err
		}
	}
	n, err := dir.GetNode()
	if err != nil {
		return nil, err
	}
	return n, dag.Add(ctx, n)
}

// Files returns n small files named file-0000… with distinct contents,
// enough of them (a few hundred) to shard a HAMT directory several
// levels deep.
func Files(n int) []Entry {
	es := make([]Entry, n)
	for i := range es {
		es[i] = Entry{Name: fmt.Sprintf("file-%04d", i), Data: Bytes(uint64(i), 100+i%50)}
	}
	return es
}

// CBOR builds a dag-cbor DAG: a root map linking a list of child maps,
// each linking a raw block, and one UnixFS file (raw leaves, so that
// every codec of ferry's DAGs appears).
func (s *Store) CBOR(t testing.TB, children int) *DAG {
	t.Helper()
	rec := s.recorder()
	ctx := context.Background()
	put := func(b blocks.Block) {
		if !rec.seen[b.Cid()] {
			rec.seen[b.Cid()] = true
			rec.added = append(rec.added, b)
		}
		if err := s.Blockstore.Put(ctx, b); err != nil {
			t.Fatalf("ipfstest: put: %v", err)
		}
	}
	encode := func(n datamodel.Node) cid.Cid {
		var buf bytes.Buffer
		if err := dagcbor.Encode(n, &buf); err != nil {
			t.Fatalf("ipfstest: dag-cbor: %v", err)
		}
		c := sum(t, uint64(multicodec.DagCbor), buf.Bytes())
		b, _ := blocks.NewBlockWithCid(buf.Bytes(), c)
		put(b)
		return c
	}
	file, err := s.importFile(rec, Bytes(7, 300_000), FileOptions{ChunkSize: 64 << 10, RawLeaves: true})
	if err != nil {
		t.Fatalf("ipfstest: import file: %v", err)
	}
	kids := make([]cid.Cid, children)
	for i := range kids {
		raw := Bytes(uint64(1000+i), 1000+i)
		rc := sum(t, uint64(multicodec.Raw), raw)
		b, _ := blocks.NewBlockWithCid(raw, rc)
		put(b)
		n, err := qp.BuildMap(basicnode.Prototype.Map, 2, func(ma datamodel.MapAssembler) {
			qp.MapEntry(ma, "index", qp.Int(int64(i)))
			qp.MapEntry(ma, "data", qp.Link(cidlink.Link{Cid: rc}))
		})
		if err != nil {
			t.Fatal(err)
		}
		kids[i] = encode(n)
	}
	root, err := qp.BuildMap(basicnode.Prototype.Map, 2, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "file", qp.Link(cidlink.Link{Cid: file.Cid()}))
		qp.MapEntry(ma, "children", qp.List(int64(len(kids)), func(la datamodel.ListAssembler) {
			for _, k := range kids {
				qp.ListEntry(la, qp.Link(cidlink.Link{Cid: k}))
			}
		}))
	})
	if err != nil {
		t.Fatal(err)
	}
	return &DAG{Root: encode(root), Blocks: rec.added}
}

func sum(t testing.TB, codec uint64, data []byte) cid.Cid {
	h, err := multihash.Sum(data, multihash.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(codec, h)
}

// Delete removes a block from the blockstore: the DAG is then missing it.
func (s *Store) Delete(t testing.TB, c cid.Cid) {
	t.Helper()
	if err := s.Blockstore.DeleteBlock(context.Background(), c); err != nil {
		t.Fatalf("ipfstest: delete %s: %v", c, err)
	}
}

// Corrupt stores other bytes under c (the block's own with one byte
// flipped): a source that serves c then serves bytes that do not hash to
// it. Only raw blocks should be corrupted when the gateway must still walk
// past them.
func (s *Store) Corrupt(t testing.TB, c cid.Cid) {
	t.Helper()
	ctx := context.Background()
	b, err := s.Blockstore.Get(ctx, c)
	if err != nil {
		t.Fatalf("ipfstest: corrupt %s: %v", c, err)
	}
	data := bytes.Clone(b.RawData())
	data[len(data)/2] ^= 0xff
	bad, _ := blocks.NewBlockWithCid(data, c)
	s.Delete(t, c)
	if err := s.Blockstore.Put(ctx, bad); err != nil {
		t.Fatalf("ipfstest: corrupt %s: %v", c, err)
	}
}
