package pack

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	chunker "github.com/ipfs/boxo/chunker"
	dag "github.com/ipfs/boxo/ipld/merkledag"
	ft "github.com/ipfs/boxo/ipld/unixfs"
	"github.com/ipfs/boxo/ipld/unixfs/importer/balanced"
	"github.com/ipfs/boxo/ipld/unixfs/importer/helpers"
	uio "github.com/ipfs/boxo/ipld/unixfs/io"
	pb "github.com/ipfs/boxo/ipld/unixfs/pb"
	"github.com/ipfs/go-cid"
	ipld "github.com/ipfs/go-ipld-format"
)

// The oracle throughout is boxo's importer (balanced layout) and boxo's
// directory with the unixfs-v1-2025 profile, run here on its own; kubo
// v0.32.1's answers for a small tree are known-answer constants.

const MiB = 1 << 20

var profile = uio.UnixFS_v1_2025

func TestConstantsAreTheProfile(t *testing.T) {
	if ChunkSize != profile.ChunkSize || MaxLinks != profile.FileDAGWidth ||
		HAMTThreshold != profile.HAMTShardingSize || HAMTFanout != profile.HAMTShardWidth ||
		!profile.RawLeaves || profile.HAMTSizeEstimation != uio.SizeEstimationBlock {
		t.Fatalf("pack's constants differ from %+v", profile)
	}
	if got, want := pbBuilder, profile.CidBuilder(); got != want {
		t.Fatalf("dag-pb CID builder %v, the profile's %v", got, want)
	}
}

// recorder is a DAGService that counts every Add by CID and keeps no
// data, so a 1 GiB import stays small.
type recorder struct {
	counts map[cid.Cid]int
}

func newRecorder() *recorder { return &recorder{counts: map[cid.Cid]int{}} }

func (r *recorder) Add(_ context.Context, nd ipld.Node) error {
	r.counts[nd.Cid()]++
	return nil
}

func (r *recorder) AddMany(ctx context.Context, nds []ipld.Node) error {
	for _, nd := range nds {
		_ = r.Add(ctx, nd)
	}
	return nil
}

func (r *recorder) Get(_ context.Context, c cid.Cid) (ipld.Node, error) {
	return nil, ipld.ErrNotFound{Cid: c}
}

func (r *recorder) GetMany(context.Context, []cid.Cid) <-chan *ipld.NodeOption {
	ch := make(chan *ipld.NodeOption)
	close(ch)
	return ch
}
func (r *recorder) Remove(context.Context, cid.Cid) error       { return nil }
func (r *recorder) RemoveMany(context.Context, []cid.Cid) error { return nil }

// importFile runs boxo's balanced importer over r with the profile's
// settings (width and chunk are the profile's except in the small-layout
// test) and returns the root node and every block it added.
func importFile(t testing.TB, r io.Reader, width int, chunk int64) (ipld.Node, map[cid.Cid]int) {
	t.Helper()
	rec := newRecorder()
	params := helpers.DagBuilderParams{Maxlinks: width, RawLeaves: true, CidBuilder: profile.CidBuilder(), Dagserv: rec}
	db, err := params.New(chunker.NewSizeSplitter(r, chunk))
	if err != nil {
		t.Fatal(err)
	}
	root, err := balanced.Layout(db)
	if err != nil {
		t.Fatal(err)
	}
	return root, rec.counts
}

// blockLog is a Sink that counts blocks, checks each block's bytes against
// its CID when asked (dag-pb blocks always), and checks that every block
// comes after the blocks it links to.
type blockLog struct {
	t          testing.TB
	counts     map[cid.Cid]int
	verifyRaws bool
}

func newBlockLog(t testing.TB, verifyRaws bool) *blockLog {
	return &blockLog{t: t, counts: map[cid.Cid]int{}, verifyRaws: verifyRaws}
}

func (l *blockLog) sink(b Block) error {
	l.t.Helper()
	pb := b.CID.Type() == cid.DagProtobuf
	if pb || l.verifyRaws {
		c, err := b.CID.Prefix().Sum(b.Data)
		if err != nil || !c.Equals(b.CID) {
			l.t.Fatalf("block %s: its bytes hash to %s (%v)", b.CID, c, err)
		}
	}
	if pb {
		nd, err := dag.DecodeProtobuf(b.Data)
		if err != nil {
			l.t.Fatalf("block %s: %v", b.CID, err)
		}
		for _, ln := range nd.Links() {
			if l.counts[ln.Cid] == 0 {
				l.t.Fatalf("block %s sunk before its child %s", b.CID, ln.Cid)
			}
		}
	}
	l.counts[b.CID]++
	return nil
}

func sameBlocks(t testing.TB, what string, got, want map[cid.Cid]int) {
	t.Helper()
	for c, n := range want {
		if got[c] != n {
			t.Errorf("%s: block %s sunk %d times, the importer added it %d times", what, c, got[c], n)
		}
	}
	for c, n := range got {
		if want[c] == 0 {
			t.Errorf("%s: block %s sunk %d times, not in the importer's DAG", what, c, n)
		}
	}
}

// split is one way to cut a file: parts of shard leaves each (0: the whole
// file in one FileDAG ended by Root), or at the given leaf indexes.
type split struct {
	name  string
	shard uint64
	cuts  map[uint64]bool
	log   *blockLog
	part  *FileDAG
	links []Link
}

func (s *split) cutAt(i uint64) bool {
	if s.cuts != nil {
		return s.cuts[i]
	}
	return s.shard > 0 && i%s.shard == 0
}

// leaf gives leaf i to the split, starting a new part when one begins at i.
func (s *split) leaf(t testing.TB, i uint64, data []byte, width, chunk uint64) {
	t.Helper()
	if s.part == nil || (i > 0 && s.cutAt(i)) {
		if s.part != nil {
			s.links = append(s.links, s.part.Part()...)
		}
		s.part = newFileDAG(i, s.log.sink, width, chunk)
	}
	if err := s.part.Leaf(data); err != nil {
		t.Fatalf("%s: leaf %d: %v", s.name, i, err)
	}
}

// root ends the file: Root on the whole file's FileDAG, or every part's
// Part fed by Add into a FileDAG from leaf 0.
func (s *split) root(t testing.TB, width, chunk uint64) Link {
	t.Helper()
	if s.shard == 0 && s.cuts == nil {
		if s.part == nil {
			s.part = newFileDAG(0, s.log.sink, width, chunk)
		}
		r, err := s.part.Root()
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		return r
	}
	if s.part != nil {
		s.links = append(s.links, s.part.Part()...)
	}
	asm := newFileDAG(0, s.log.sink, width, chunk)
	for _, l := range s.links {
		if err := asm.Add(l); err != nil {
			t.Fatalf("%s: add %+v: %v", s.name, l, err)
		}
	}
	r, err := asm.Root()
	if err != nil {
		t.Fatalf("%s: %v", s.name, err)
	}
	return r
}

// checkFile imports the stream the importer's way and ours, whole and
// split every way asked, in one read of the stream for ours, and compares
// the roots and the blocks.
func checkFile(t *testing.T, size int64, stream func() io.Reader, width, chunk uint64, splits []*split) {
	t.Helper()
	want, wantBlocks := importFile(t, stream(), int(width), int64(chunk))
	wantSize, err := want.Size()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range splits {
		s.log = newBlockLog(t, size <= 8*MiB)
	}
	r := stream()
	buf := make([]byte, chunk)
	for i := uint64(0); ; i++ {
		n, err := io.ReadFull(r, buf)
		if n == 0 {
			break
		}
		if err != nil && err != io.ErrUnexpectedEOF {
			t.Fatal(err)
		}
		for _, s := range splits {
			s.leaf(t, i, buf[:n], width, chunk)
		}
	}
	for _, s := range splits {
		got := s.root(t, width, chunk)
		if !got.CID.Equals(want.Cid()) || got.Tsize != wantSize || got.Size != uint64(size) {
			t.Errorf("%s: root %s Tsize %d Size %d, the importer's %s Tsize %d Size %d",
				s.name, got.CID, got.Tsize, got.Size, want.Cid(), wantSize, size)
		}
		sameBlocks(t, s.name, s.log.counts, wantBlocks)
	}
}

// stream is size bytes of a ChaCha8 stream: fast, the same on every run.
func stream(size int64, seed byte) func() io.Reader {
	return func() io.Reader {
		return io.LimitReader(rand.NewChaCha8([32]byte{seed}), size)
	}
}

func shardSplits(shardsMiB ...uint64) []*split {
	out := []*split{{name: "whole"}}
	for _, s := range shardsMiB {
		out = append(out, &split{name: fmt.Sprintf("shard %d MiB", s), shard: s})
	}
	return out
}

func TestFileDAGEqualsImporter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		size   int64
		shards []uint64 // MiB
	}{
		{"an empty file is the empty raw block", 0, []uint64{1}},
		{"one byte is one raw leaf", 1, []uint64{1}},
		{"1 MiB - 1 is one short leaf", MiB - 1, []uint64{1}},
		{"1 MiB is one full leaf", MiB, []uint64{1}},
		{"1 MiB + 1 is a node over two leaves", MiB + 1, []uint64{1}},
		{"3 MiB + 5 split at each size", 3*MiB + 5, []uint64{1, 2, 3, 4}},
		{"1024 MiB is one full node", 1024 * MiB, []uint64{1, 3, 1000, 1023, 1024}},
		{"1025 MiB is two levels", 1025 * MiB, []uint64{1, 3, 7, 100, 1000, 1023, 1024, 1025}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if testing.Short() && tc.size >= 1024*MiB {
				t.Skip("-short: the files of 1 GiB and more run in make test, not here")
			}
			checkFile(t, tc.size, stream(tc.size, byte(tc.size)), MaxLinks, ChunkSize, shardSplits(tc.shards...))
		})
	}
}

func TestEmptyFileIsTheEmptyRawBlock(t *testing.T) {
	// kubo v0.32.1: ipfs add --cid-version=1 --raw-leaves of an empty file.
	const kubo = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
	var blocks []Block
	r, err := NewFileDAG(0, func(b Block) error { blocks = append(blocks, b); return nil }).Root()
	if err != nil {
		t.Fatal(err)
	}
	if r.CID.String() != kubo || EmptyFileCID.String() != kubo || r.Tsize != 0 || r.Size != 0 {
		t.Fatalf("empty file %+v, EmptyFileCID %s, kubo's %s", r, EmptyFileCID, kubo)
	}
	if len(blocks) != 1 || !blocks[0].CID.Equals(r.CID) || len(blocks[0].Data) != 0 {
		t.Fatalf("sunk %+v, want the one empty block", blocks)
	}
}

// With a narrow fan-out and tiny chunks the importer builds deep DAGs of a
// few bytes, so every cut of every length, at every depth, is checked.
func TestFileDAGPartsAtEveryCutOfNarrowDAGs(t *testing.T) {
	const chunk = 4
	for _, width := range []uint64{2, 3, 4} {
		max := width*width*width + width + 2
		for leaves := uint64(0); leaves <= max; leaves++ {
			for _, tail := range []int64{0, 1} { // the last leaf full, or of one byte
				size := int64(leaves) * chunk
				if tail == 1 {
					if leaves == 0 {
						continue
					}
					size -= chunk - 1
				}
				splits := []*split{{name: "whole"}}
				for shard := uint64(1); shard <= leaves; shard++ {
					splits = append(splits, &split{name: fmt.Sprintf("shard %d", shard), shard: shard})
				}
				rng := rand.New(rand.NewPCG(width, leaves))
				for k := 0; k < 5; k++ {
					cuts := map[uint64]bool{}
					for i := uint64(1); i < leaves; i++ {
						cuts[i] = rng.IntN(3) == 0
					}
					splits = append(splits, &split{name: fmt.Sprintf("random cuts %v", cuts), cuts: cuts})
				}
				name := fmt.Sprintf("width %d, %d bytes", width, size)
				t.Run(name, func(t *testing.T) {
					checkFile(t, size, stream(size, byte(leaves)), width, chunk, splits)
				})
			}
		}
	}
}

func TestFileDAGRejectsMisuse(t *testing.T) {
	nop := func(Block) error { return nil }
	f := NewFileDAG(0, nop)
	if err := f.Leaf(make([]byte, ChunkSize+1)); err == nil {
		t.Error("a leaf over ChunkSize was taken")
	}
	if err := f.Leaf([]byte("short")); err != nil {
		t.Fatal(err)
	}
	if err := f.Leaf([]byte("more")); err == nil {
		t.Error("a leaf after a short leaf was taken")
	}
	if _, err := NewFileDAG(5, nop).Root(); err == nil {
		t.Error("Root of a part was taken")
	}
	if err := NewFileDAG(0, nop).Add(Link{Leaf: 3, Size: ChunkSize}); err == nil {
		t.Error("a subtree out of order was taken")
	}
	if err := NewFileDAG(1, nop).Add(Link{Leaf: 1, Depth: 1, Size: MaxLinks * ChunkSize}); err == nil {
		t.Error("a node off its boundary was taken")
	}
}

// fileOf makes a file both ways: the importer's node, and our Link.
func fileOf(t testing.TB, data []byte, sink Sink) (ipld.Node, Link) {
	t.Helper()
	nd, _ := importFile(t, bytes.NewReader(data), MaxLinks, ChunkSize)
	f := NewFileDAG(0, sink)
	for off := 0; off < len(data); off += ChunkSize {
		if err := f.Leaf(data[off:min(off+ChunkSize, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	l, err := f.Root()
	if err != nil {
		t.Fatal(err)
	}
	return nd, l
}

// withProfileGlobals runs fn with boxo's globals set to the profile, as a
// program using the profile the documented way does, and restores them.
func withProfileGlobals(fn func()) {
	size, est, width := uio.HAMTShardingSize, uio.HAMTSizeEstimation, uio.DefaultShardWidth
	chunk, links := chunker.DefaultBlockSize, helpers.DefaultLinksPerBlock
	defer func() {
		uio.HAMTShardingSize, uio.HAMTSizeEstimation, uio.DefaultShardWidth = size, est, width
		chunker.DefaultBlockSize, helpers.DefaultLinksPerBlock = chunk, links
	}()
	profile.ApplyGlobals()
	fn()
}

// oracleDir builds the directory with boxo's io.NewDirectory under the
// profile's globals from the importer's own nodes; it returns the root
// and the directory's own blocks (the entries' nodes left out).
func oracleDir(t testing.TB, names []string, nodes []ipld.Node) (ipld.Node, map[cid.Cid]int) {
	t.Helper()
	rec := newRecorder()
	var root ipld.Node
	withProfileGlobals(func() {
		dir, err := uio.NewDirectory(rec, uio.WithCidBuilder(profile.CidBuilder()))
		if err != nil {
			t.Fatal(err)
		}
		for i, name := range names {
			if err := dir.AddChild(context.Background(), name, nodes[i]); err != nil {
				t.Fatal(err)
			}
		}
		if root, err = dir.GetNode(); err != nil {
			t.Fatal(err)
		}
	})
	blocks := map[cid.Cid]int{}
	for c := range rec.counts {
		blocks[c] = 1 // boxo adds a shard when it encodes it and when its parent links it
	}
	blocks[root.Cid()] = 1
	for _, nd := range nodes {
		delete(blocks, nd.Cid())
	}
	return root, blocks
}

type entry struct {
	name string
	data []byte
}

// checkDir builds a directory of files both ways and compares root, Tsize
// and blocks; it returns the root's UnixFS type.
func checkDir(t *testing.T, entries []entry) pb.Data_DataType {
	t.Helper()
	fileLog := newBlockLog(t, true)
	names := make([]string, len(entries))
	nodes := make([]ipld.Node, len(entries))
	links := make([]Link, len(entries))
	for i, e := range entries {
		names[i] = e.name
		nodes[i], links[i] = fileOf(t, e.data, fileLog.sink)
	}
	want, wantBlocks := oracleDir(t, names, nodes)

	log := newBlockLog(t, true)
	for c := range fileLog.counts { // the entries' blocks come first, as in a walk
		log.counts[c] = 1
	}
	d := NewDir(log.sink)
	for i := range entries {
		if err := d.Add(context.Background(), names[i], links[i]); err != nil {
			t.Fatal(err)
		}
	}
	got, err := d.Finish(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	wantSize, _ := want.Size()
	if !got.CID.Equals(want.Cid()) || got.Tsize != wantSize || got.Size != 0 {
		t.Fatalf("directory %s Tsize %d, boxo's %s Tsize %d", got.CID, got.Tsize, want.Cid(), wantSize)
	}
	for c := range fileLog.counts {
		log.counts[c]--
		if log.counts[c] == 0 {
			delete(log.counts, c)
		}
	}
	sameBlocks(t, "directory", log.counts, wantBlocks)
	fsn, err := ft.FSNodeFromBytes(want.(*dag.ProtoNode).Data())
	if err != nil {
		t.Fatal(err)
	}
	return fsn.Type()
}

// randomFiles makes n files of names with the prefix, up to maxSize
// bytes, a few of them more than a leaf.
func randomFiles(n int, prefix string, maxSize int, seed uint64) []entry {
	rng := rand.New(rand.NewPCG(seed, 1))
	out := make([]entry, n)
	for i := range out {
		size := rng.IntN(maxSize + 1)
		if i%997 == 3 {
			size = 2*ChunkSize + i
		}
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		out[i] = entry{name: fmt.Sprintf("%s%06d", prefix, i), data: data}
	}
	return out
}

func TestDirEqualsBoxo(t *testing.T) {
	t.Run("ten entries in UTF-8 make a basic directory", func(t *testing.T) {
		entries := randomFiles(10, "fïlé 文件 ", 300, 1)
		entries[0].name = "ß"
		entries[1].name = "🙂 smile"
		if got := checkDir(t, entries); got != ft.TDirectory {
			t.Fatalf("type %v, want a basic directory", got)
		}
	})
	t.Run("an empty directory", func(t *testing.T) {
		if got := checkDir(t, nil); got != ft.TDirectory {
			t.Fatalf("type %v", got)
		}
	})
	t.Run("5,000 long names make a HAMT", func(t *testing.T) {
		entries := randomFiles(5000, strings.Repeat("long name ", 10)+"Ω ", 40, 2)
		if got := checkDir(t, entries); got != ft.THAMTShard {
			t.Fatalf("type %v, want a HAMT shard", got)
		}
	})
}

// The entry that takes the basic block past 256 KiB turns it into a HAMT;
// both sides of that edge, found with boxo's own directory.
func TestDirHAMTThresholdEdge(t *testing.T) {
	entries := randomFiles(4000, strings.Repeat("n", 120), 8, 3)
	rec := newRecorder()
	first := -1
	withProfileGlobals(func() {
		dir, err := uio.NewDirectory(rec, uio.WithCidBuilder(profile.CidBuilder()))
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range entries {
			nd, _ := importFile(t, bytes.NewReader(e.data), MaxLinks, ChunkSize)
			if err := dir.AddChild(context.Background(), e.name, nd); err != nil {
				t.Fatal(err)
			}
			if _, basic := dir.(*uio.DynamicDirectory).Directory.(*uio.BasicDirectory); !basic {
				first = i + 1
				return
			}
		}
	})
	if first < 0 {
		t.Fatal("4,000 entries stayed a basic directory")
	}
	if got := checkDir(t, entries[:first-1]); got != ft.TDirectory {
		t.Fatalf("%d entries: type %v, want basic", first-1, got)
	}
	if got := checkDir(t, entries[:first]); got != ft.THAMTShard {
		t.Fatalf("%d entries: type %v, want a HAMT", first, got)
	}
}

func TestSymlinkAndTreeEqualKubo(t *testing.T) {
	// kubo v0.32.1, ipfs add --only-hash --cid-version=1 --raw-leaves -r
	// --chunker=size-1048576 of this tree:
	//   empty                 (no bytes)
	//   link -> héllo/wörld.txt
	//   ünïcode 文件.txt       "hello\n"
	//   sub/big.bin           2 MiB + 3 bytes, byte i is i % 251
	//   sub/emptydir/
	const (
		kuboLink  = "bafybeigqdn57m7njodi56vtb6w72zabhfqkqejwwolebyfd2squmkqqotu"
		kuboBig   = "bafybeics5xcgs4iarnoaovty3govcy64z3jtuqaz5x2ewkiaeh67ovc3au"
		kuboEmpty = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
		kuboSub   = "bafybeiewcjm3yccamrkwcwdtvyktpe3v5e2vpsjhpublu2exlwnvreptqu"
		kuboTree  = "bafybeidoqklygqqel46f5ltj7fvf6f5gehs5p3cpoqvfjkheyoz3wphwsm"
	)
	log := newBlockLog(t, true)
	ctx := context.Background()
	check := func(what string, l Link, want string) {
		t.Helper()
		if l.CID.String() != want {
			t.Errorf("%s: %s, kubo's %s", what, l.CID, want)
		}
	}
	link, err := Symlink("héllo/wörld.txt", log.sink)
	if err != nil {
		t.Fatal(err)
	}
	check("symlink", link, kuboLink)
	big := make([]byte, 2*ChunkSize+3)
	for i := range big {
		big[i] = byte(i % 251)
	}
	_, bigLink := fileOf(t, big, log.sink)
	check("sub/big.bin", bigLink, kuboBig)
	dir := func(entries map[string]Link) Link {
		t.Helper()
		d := NewDir(log.sink)
		for name, l := range entries { // map order: a directory sorts its entries
			if err := d.Add(ctx, name, l); err != nil {
				t.Fatal(err)
			}
		}
		l, err := d.Finish(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	emptyDir := dir(nil)
	check("sub/emptydir", emptyDir, kuboEmpty)
	subLink := dir(map[string]Link{"big.bin": bigLink, "emptydir": emptyDir})
	check("sub", subLink, kuboSub)
	_, empty := fileOf(t, nil, log.sink)
	_, hello := fileOf(t, []byte("hello\n"), log.sink)
	tree := dir(map[string]Link{"empty": empty, "link": link, "ünïcode 文件.txt": hello, "sub": subLink})
	check("tree", tree, kuboTree)
}

func BenchmarkFileDAG(b *testing.B) {
	data := make([]byte, ChunkSize)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(data)
	f := NewFileDAG(0, func(Block) error { return nil })
	b.SetBytes(ChunkSize)
	b.ReportAllocs()
	for b.Loop() {
		if err := f.Leaf(data); err != nil {
			b.Fatal(err)
		}
	}
}
