package pack

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/internal/ipfstest"
	commp "github.com/filecoin-project/go-fil-commp-hashhash"
	files "github.com/ipfs/boxo/files"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs"
	unixfile "github.com/ipfs/boxo/ipld/unixfs/file"
	unixfspb "github.com/ipfs/boxo/ipld/unixfs/pb"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/ipld/go-car/v2"
	dagpb "github.com/ipld/go-codec-dagpb"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/datamodel"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	"github.com/ipld/go-ipld-prime/node/basicnode"
	"github.com/ipld/go-ipld-prime/traversal"
	"github.com/multiformats/go-multihash"
)

// tree is a test tree: path → content ("" for a directory, "->target" for
// a symlink).
type tree map[string]string

func writeTree(t *testing.T, dir string, tr tree) {
	t.Helper()
	paths := make([]string, 0, len(tr))
	for p := range tr {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		full := filepath.Join(dir, filepath.FromSlash(p))
		c := tr[p]
		switch {
		case c == "/":
			must(t, os.MkdirAll(full, 0o755))
		case strings.HasPrefix(c, "->"):
			must(t, os.MkdirAll(filepath.Dir(full), 0o755))
			must(t, os.Symlink(c[2:], full))
		default:
			must(t, os.MkdirAll(filepath.Dir(full), 0o755))
			must(t, os.WriteFile(full, []byte(c), 0o644))
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func random(seed uint64, n int) string { return string(ipfstest.Bytes(seed, n)) }

// sampleTree has what a pack must handle: small, empty, chunk-edge and
// split files, nesting, an empty directory, a symlink, UTF-8 names, a
// hidden file and a directory large enough to be a HAMT.
func sampleTree() tree {
	tr := tree{
		"a.txt":               "hello\n",
		"empty":               "",
		"edge/exact":          random(1, ChunkSize),
		"edge/plus1":          random(2, ChunkSize+1),
		"big.bin":             random(3, 5*ChunkSize+3),
		"café/naïve ☃.txt":    "unicode\n",
		"nested/deeper/d.txt": random(4, 70_000),
		"void":                "/",
		"link":                "->a.txt",
		".hidden":             "not packed by default",
		"nested/.git/config":  "not packed by default",
	}
	// About 250 bytes of dag-pb per entry: 1,200 pass the 256 KiB threshold.
	for i := range 1200 {
		tr[path.Join("many", strings.Repeat("n", 200)+"-"+strconv.Itoa(i))] = strconv.Itoa(i)
	}
	return tr
}

func settings(t *testing.T, carSize, shard uint64) Settings {
	t.Helper()
	s, err := NewSettings(carSize, shard, false, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func run(t *testing.T, src, out string, s Settings, b Builder) *Summary {
	t.Helper()
	sum, err := Run(context.Background(), Options{Source: src, Out: out, Settings: s, Builder: b,
		URL: func(c string) string { return "http://127.0.0.1:1/cars/" + c + ".car" }})
	if err != nil {
		t.Fatalf("pack: %v", err)
	}
	return sum
}

type manifest struct {
	Root     string          `json:"root"`
	Settings Settings        `json:"settings"`
	NPieces  int             `json:"n_pieces"`
	Pieces   []ManifestPiece `json:"pieces"`
	Contents []ManifestEntry `json:"contents"`
	Skipped  []Skip          `json:"skipped"`
}

func readManifest(t *testing.T, out string) (manifest, []byte) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(out, "manifest.json"))
	must(t, err)
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	return m, b
}

// carBlocks reads a CAR with go-car, checks every block against its CID,
// and returns its root and blocks in order.
func carBlocks(t *testing.T, name string) (cid.Cid, []blocks.Block) {
	t.Helper()
	f, err := os.Open(name)
	must(t, err)
	defer f.Close()
	br, err := car.NewBlockReader(f)
	must(t, err)
	if len(br.Roots) != 1 {
		t.Fatalf("%s: roots %v", name, br.Roots)
	}
	var bs []blocks.Block
	for {
		b, err := br.Next()
		if err == io.EOF {
			break
		}
		must(t, err)
		if got, err := b.Cid().Prefix().Sum(b.RawData()); err != nil || !got.Equals(b.Cid()) {
			t.Fatalf("%s: block %s hashes to %s", name, b.Cid(), got)
		}
		bs = append(bs, b)
	}
	return br.Roots[0], bs
}

// checkPieces holds every CAR to independent computations: its name and
// CAR CID to the sha2-256 of its bytes, its md5, its piece to
// go-fil-commp-hashhash, and the CAR files in out to the manifest's.
func checkPieces(t *testing.T, out string, m manifest) {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(out, "*.car"))
	if len(names) != len(m.Pieces) || m.NPieces != len(m.Pieces) {
		t.Fatalf("%d CAR files in out, manifest lists %d (n_pieces %d)", len(names), len(m.Pieces), m.NPieces)
	}
	for _, p := range m.Pieces {
		data, err := os.ReadFile(filepath.Join(out, p.Car+".car"))
		if err != nil {
			t.Fatalf("piece %d: %v", p.Index, err)
		}
		sum := sha256.Sum256(data)
		mh, _ := multihash.Encode(sum[:], multihash.SHA2_256)
		if want := cid.NewCidV1(0x0202, mh).String(); p.Car != want {
			t.Errorf("CAR %d named %s, its sha2-256 gives %s", p.Index, p.Car, want)
		}
		if h := md5.Sum(data); p.MD5 != hex.EncodeToString(h[:]) || p.Size != uint64(len(data)) {
			t.Errorf("CAR %d: md5 %s size %d, the file has %x and %d", p.Index, p.MD5, p.Size, h, len(data))
		}
		var cp commp.Calc
		cp.Write(data)
		root, padded, err := cp.Digest()
		must(t, err)
		want, err := commPCID(root)
		must(t, err)
		if p.PieceCID != want || p.PieceSize != padded {
			t.Errorf("CAR %d: piece %s/%d, go-fil-commp-hashhash gives %s/%d", p.Index, p.PieceCID, p.PieceSize, want, padded)
		}
		if !strings.HasSuffix(p.URL, "/"+p.Car+".car") {
			t.Errorf("CAR %d: url %q", p.Index, p.URL)
		}
	}
}

// commPCID is the v1 piece CID (fil-commitment-unsealed, sha2-256-trunc254-padded) of a root.
func commPCID(root []byte) (string, error) {
	mh, err := multihash.Encode(root, multihash.SHA2_256_TRUNC254_PADDED)
	if err != nil {
		return "", err
	}
	return cid.NewCidV1(cid.FilCommitmentUnsealed, mh).String(), nil
}

// links decodes a block with go-ipld-prime and returns the CIDs it links to.
func links(t *testing.T, b blocks.Block) []cid.Cid {
	t.Helper()
	var nb datamodel.NodeBuilder
	switch b.Cid().Type() {
	case cid.Raw:
		return nil
	case cid.DagProtobuf:
		nb = dagpb.Type.PBNode.NewBuilder()
		must(t, dagpb.DecodeBytes(nb, b.RawData()))
	case cid.DagCBOR:
		nb = basicnode.Prototype.Any.NewBuilder()
		must(t, dagcbor.Decode(nb, bytes.NewReader(b.RawData())))
	default:
		t.Fatalf("block %s has codec %x", b.Cid(), b.Cid().Type())
	}
	ls, err := traversal.SelectLinks(nb.Build())
	must(t, err)
	out := make([]cid.Cid, len(ls))
	for i, l := range ls {
		out[i] = l.(cidlink.Link).Cid
	}
	return out
}

// checkCARs reads every CAR back: each data CAR holds everything its
// root reaches, no block is in two CARs, and the union of the CARs,
// read with boxo's UnixFS reader from the tree root, is the source tree.
func checkCARs(t *testing.T, src, out string, m manifest, tr tree) {
	t.Helper()
	store := ipfstest.NewStore()
	where := map[cid.Cid]int{}
	for _, p := range m.Pieces {
		root, bs := carBlocks(t, filepath.Join(out, p.Car+".car"))
		if root.String() != p.Root {
			t.Errorf("CAR %d: root %s, manifest says %s", p.Index, root, p.Root)
		}
		have := map[cid.Cid]blocks.Block{}
		for _, b := range bs {
			if prev, ok := where[b.Cid()]; ok {
				t.Errorf("block %s is in CAR %d and CAR %d", b.Cid(), prev, p.Index)
			}
			where[b.Cid()] = p.Index
			have[b.Cid()] = b
			must(t, store.Blockstore.Put(context.Background(), b))
		}
		if p.Kind == KindData {
			// Everything the listing reaches is in this CAR.
			seen, queue := map[cid.Cid]bool{root: true}, []cid.Cid{root}
			for len(queue) > 0 {
				c := queue[0]
				queue = queue[1:]
				b, ok := have[c]
				if !ok {
					t.Fatalf("CAR %d: its root reaches %s, which it does not hold", p.Index, c)
				}
				for _, l := range links(t, b) {
					if !seen[l] {
						seen[l] = true
						queue = append(queue, l)
					}
				}
			}
			if len(seen) != len(have) {
				t.Errorf("CAR %d holds %d blocks, its root reaches %d", p.Index, len(have), len(seen))
			}
		}
	}
	ctx := context.Background()
	root, err := cid.Decode(m.Root)
	must(t, err)
	nd, err := store.DAGs.Get(ctx, root)
	must(t, err)
	f, err := unixfile.NewUnixfsFile(ctx, store.DAGs, nd)
	must(t, err)
	got := tree{}
	readBack(t, f, "", got)
	if len(got) != len(tr) {
		t.Errorf("read back %d entries, want %d", len(got), len(tr))
	}
	for p, want := range tr {
		if got[p] != want {
			t.Errorf("%s: read back %d bytes %.20q, want %d bytes %.20q", p, len(got[p]), got[p], len(want), want)
		}
	}
}

func readBack(t *testing.T, n files.Node, p string, got tree) {
	switch n := n.(type) {
	case files.Directory:
		if p != "" {
			got[p] = "/"
		}
		it := n.Entries()
		for it.Next() {
			readBack(t, it.Node(), path.Join(p, it.Name()), got)
		}
		must(t, it.Err())
	case *files.Symlink:
		got[p] = "->" + n.Target
	case files.File:
		b, err := io.ReadAll(n)
		must(t, err)
		got[p] = string(b)
	default:
		t.Fatalf("%s: a %T", p, n)
	}
}

// packed is the tree as a pack should see it: hidden names gone, and
// directories that only exist as parents listed.
func packed(tr tree) tree {
	out := tree{}
	for p, c := range tr {
		hidden := false
		for _, part := range strings.Split(p, "/") {
			hidden = hidden || strings.HasPrefix(part, ".")
		}
		if hidden {
			continue
		}
		out[p] = c
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			out[d] = "/"
		}
	}
	return out
}

// fileCIDs checks every file's CID in the manifest against boxo's
// importer with the 2025 profile, run on the source file.
func fileCIDs(t *testing.T, src string, m manifest) {
	t.Helper()
	store := ipfstest.NewStore()
	n := 0
	for _, e := range m.Contents {
		if e.Type != TypeFile {
			continue
		}
		n++
		data, err := os.ReadFile(filepath.Join(src, filepath.FromSlash(e.Path)))
		must(t, err)
		want := store.FileFrom(t, bytes.NewReader(data), ipfstest.FileOptions{ChunkSize: ChunkSize, RawLeaves: true, MaxLinks: MaxLinks})
		if e.CID != want.String() {
			t.Errorf("%s: file CID %s, boxo's importer gives %s", e.Path, e.CID, want)
		}
		if sum := sha256.Sum256(data); e.SHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("%s: sha256 %s, want %x", e.Path, e.SHA256, sum)
		}
		if e.ByteLength == nil || *e.ByteLength != uint64(len(data)) {
			t.Errorf("%s: byte_length %v, want %d", e.Path, e.ByteLength, len(data))
		}
		var covered uint64
		for _, p := range e.Parts {
			if p.Offset != covered {
				t.Errorf("%s: part at %d, want %d", e.Path, p.Offset, covered)
			}
			covered += p.Length
		}
		if covered != uint64(len(data)) {
			t.Errorf("%s: parts cover %d bytes of %d", e.Path, covered, len(data))
		}
	}
	if n == 0 {
		t.Fatal("the manifest lists no files")
	}
}

func TestPackRoundTrip(t *testing.T) {
	src, out := t.TempDir(), t.TempDir()
	tr := sampleTree()
	writeTree(t, src, tr)
	// 4 MiB CARs and 2 MiB shards: big.bin (5 MiB+3) is split in three,
	// and the tree needs several CARs.
	sum := run(t, src, out, settings(t, 4*ChunkSize, 2*ChunkSize), Local{Jobs: 2})
	m, _ := readManifest(t, out)
	if sum.Plan.Jobs < 3 || len(m.Pieces) != sum.Plan.Jobs+1 {
		t.Fatalf("%d jobs, %d pieces: want several CARs and the tree CAR", sum.Plan.Jobs, len(m.Pieces))
	}
	var big ManifestEntry
	for _, e := range m.Contents {
		if e.Path == "big.bin" {
			big = e
		}
	}
	if len(big.Parts) != 3 || big.Parts[0].Car == big.Parts[2].Car {
		t.Errorf("big.bin parts %+v: want three, in different CARs", big.Parts)
	}
	checkPieces(t, out, m)
	checkCARs(t, src, out, m, packed(tr))
	fileCIDs(t, src, m)
	// "many" is a HAMT, its siblings basic directories, as boxo reads them.
	_, treeBlocks := carBlocks(t, filepath.Join(out, m.Pieces[len(m.Pieces)-1].Car+".car"))
	kinds := map[string]unixfspb.Data_DataType{}
	for _, e := range m.Contents {
		if e.Type != TypeDirectory {
			continue
		}
		for _, b := range treeBlocks {
			if b.Cid().String() == e.CID {
				pn, err := merkledag.DecodeProtobuf(b.RawData())
				must(t, err)
				fsn, err := unixfs.FSNodeFromBytes(pn.Data())
				must(t, err)
				kinds[e.Path] = fsn.Type()
			}
		}
	}
	if kinds["many"] != unixfs.THAMTShard || kinds["nested"] != unixfs.TDirectory || kinds[""] != unixfs.TDirectory {
		t.Errorf("directory kinds %v: want many a HAMT shard, the others basic", kinds)
	}
	if m.Root != sum.Root {
		t.Errorf("manifest root %s, summary %s", m.Root, sum.Root)
	}
}

func TestPackIsDeterministic(t *testing.T) {
	src := t.TempDir()
	writeTree(t, src, sampleTree())
	s := settings(t, 4*ChunkSize, 2*ChunkSize)
	a, b := t.TempDir(), t.TempDir()
	run(t, src, a, s, Local{Jobs: 1})
	run(t, src, b, s, Local{Jobs: 3})
	_, ma := readManifest(t, a)
	_, mb := readManifest(t, b)
	if !bytes.Equal(ma, mb) {
		t.Fatal("two packs of one tree, one and three jobs at once, wrote different manifests")
	}
	names, _ := filepath.Glob(filepath.Join(a, "*.car"))
	for _, n := range names {
		x, _ := os.ReadFile(n)
		y, err := os.ReadFile(filepath.Join(b, filepath.Base(n)))
		if err != nil || !bytes.Equal(x, y) {
			t.Errorf("%s differs between the packs (%v)", filepath.Base(n), err)
		}
	}
}

// stopAfter builds like Local but stops the pack once n CARs are done,
// as a kill would between two CARs.
type stopAfter struct {
	n      int
	cancel context.CancelFunc
}

func (s *stopAfter) Build(ctx context.Context, jobs []Job, done func(*Result) error) error {
	seen := 0
	return Local{Jobs: 1}.Build(ctx, jobs, func(r *Result) error {
		if err := done(r); err != nil {
			return err
		}
		if seen++; seen == s.n {
			s.cancel()
			return context.Canceled
		}
		return nil
	})
}

// countBuilds counts the CARs a Local builder builds.
type countBuilds struct{ n int }

func (c *countBuilds) Build(ctx context.Context, jobs []Job, done func(*Result) error) error {
	c.n += len(jobs)
	return Local{Jobs: 2}.Build(ctx, jobs, done)
}

func TestPackResumesWhereItStopped(t *testing.T) {
	src := t.TempDir()
	writeTree(t, src, sampleTree())
	s := settings(t, 4*ChunkSize, 2*ChunkSize)
	whole := t.TempDir()
	want := run(t, src, whole, s, Local{Jobs: 2})
	_, wantManifest := readManifest(t, whole)

	out := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	_, err := Run(ctx, Options{Source: src, Out: out, Settings: s, Builder: &stopAfter{n: 1, cancel: cancel},
		URL: func(c string) string { return "http://127.0.0.1:1/cars/" + c + ".car" }})
	if err == nil {
		t.Fatal("a pack stopped after one CAR returned no error")
	}
	if _, err := os.Stat(filepath.Join(out, "manifest.json")); err == nil {
		t.Fatal("a stopped pack wrote its manifest")
	}
	// A CAR recorded but stopped before its rename is moved, not rebuilt.
	var r1 Result
	st, _ := openState(out)
	if ok, _ := st.readJSON(doneName(1), &r1); !ok {
		t.Fatal("the first CAR is not recorded")
	}
	must(t, os.Rename(filepath.Join(out, r1.Car+".car"), st.path(tmpName(1))))

	count := &countBuilds{}
	got := run(t, src, out, s, count)
	if count.n != want.Plan.Jobs-1 {
		t.Errorf("the resumed pack built %d CARs, want %d (all but the recorded one)", count.n, want.Plan.Jobs-1)
	}
	if got.Built != want.Plan.Jobs {
		t.Errorf("the resumed pack says it built %d CARs, want %d (the rest and the tree)", got.Built, want.Plan.Jobs)
	}
	_, gotManifest := readManifest(t, out)
	if !bytes.Equal(gotManifest, wantManifest) {
		t.Error("the resumed pack's manifest differs from an uninterrupted pack's")
	}
	m, _ := readManifest(t, out)
	checkPieces(t, out, m)
	leftovers, _ := filepath.Glob(st.path("tmp/*"))
	if len(leftovers) != 0 {
		t.Errorf("temp files left: %v", leftovers)
	}

	// A third run builds nothing and changes nothing.
	count = &countBuilds{}
	again := run(t, src, out, s, count)
	_, third := readManifest(t, out)
	if count.n != 0 || again.Built != 0 || !bytes.Equal(third, wantManifest) {
		t.Errorf("a run over a finished pack built %d CARs (says %d) and changed the manifest: %v", count.n, again.Built, !bytes.Equal(third, wantManifest))
	}
}

func TestPackRefusesAnotherPackInItsOutput(t *testing.T) {
	src, out := t.TempDir(), t.TempDir()
	writeTree(t, src, tree{"a": "a"})
	run(t, src, out, settings(t, 4*ChunkSize, 2*ChunkSize), Local{Jobs: 1})
	_, err := Run(context.Background(), Options{Source: src, Out: out, Settings: settings(t, 8*ChunkSize, 2*ChunkSize)})
	if !errors.Is(err, ErrOtherPack) {
		t.Errorf("other settings into the same output: %v, want ErrOtherPack", err)
	}
	other := t.TempDir()
	writeTree(t, other, tree{"b": "b"})
	_, err = Run(context.Background(), Options{Source: other, Out: out, Settings: settings(t, 4*ChunkSize, 2*ChunkSize)})
	if !errors.Is(err, ErrOtherPack) {
		t.Errorf("another tree into the same output: %v, want ErrOtherPack", err)
	}
	_, err = Run(context.Background(), Options{Source: src, Out: filepath.Join(src, "out"), Settings: settings(t, 4*ChunkSize, 2*ChunkSize)})
	if err == nil || !strings.Contains(err.Error(), "inside the tree") {
		t.Errorf("an output inside the tree: %v", err)
	}
}

func TestPackLeavesOutWhatItCannotReadOrWhatChanges(t *testing.T) {
	src, out := t.TempDir(), t.TempDir()
	tr := tree{
		"keep.txt":       "kept",
		"grows.bin":      random(5, 3*ChunkSize),
		"touched.txt":    "touched after the walk",
		"locked/secret":  "unreadable",
		"open/visible":   "fine",
		"pipe-neighbour": "fine too",
		"vanishes.txt":   "removed after the walk",
	}
	writeTree(t, src, tr)
	must(t, syscallMkfifo(filepath.Join(src, "fifo")))
	root := os.Geteuid() == 0
	must(t, os.Chmod(filepath.Join(src, "locked"), 0o000))
	t.Cleanup(func() { os.Chmod(filepath.Join(src, "locked"), 0o755) })

	// touched.txt changes between the walk and its read; grows.bin
	// changes once its first leaf is in the CAR.
	b := builderFunc(func(ctx context.Context, jobs []Job, done func(*Result) error) error {
		future := time.Now().Add(time.Hour)
		must(t, os.Chtimes(filepath.Join(src, "touched.txt"), future, future))
		must(t, os.Remove(filepath.Join(src, "vanishes.txt")))
		return Local{Jobs: 1}.Build(ctx, jobs, done)
	})
	testHookLeaf = func(p string) {
		if p == "grows.bin" {
			f, err := os.OpenFile(filepath.Join(src, "grows.bin"), os.O_APPEND|os.O_WRONLY, 0)
			must(t, err)
			f.WriteString("more")
			f.Close()
		}
	}
	defer func() { testHookLeaf = nil }()
	run(t, src, out, settings(t, 8*ChunkSize, 2*ChunkSize), b)
	m, _ := readManifest(t, out)
	reasons := map[string]string{}
	for _, s := range m.Skipped {
		reasons[s.Path] = s.Reason
	}
	want := map[string]string{
		"fifo":         "not a file, directory or symlink",
		"touched.txt":  "changed while packed: modified",
		"grows.bin":    "changed while packed",
		"vanishes.txt": "no such file",
	}
	if !root {
		want["locked"] = "permission denied"
	}
	for p, w := range want {
		if !strings.Contains(reasons[p], w) {
			t.Errorf("%s: skipped %q, want a reason with %q", p, reasons[p], w)
		}
	}
	if len(reasons) != len(want) {
		t.Errorf("skipped %v, want only %v", reasons, want)
	}
	expect := packed(tree{"keep.txt": "kept", "open/visible": "fine", "pipe-neighbour": "fine too"})
	if root {
		expect["locked"] = "/"
		expect["locked/secret"] = "unreadable"
	}
	checkPieces(t, out, m)
	checkCARs(t, src, out, m, expect)
}

type builderFunc func(ctx context.Context, jobs []Job, done func(*Result) error) error

func (f builderFunc) Build(ctx context.Context, jobs []Job, done func(*Result) error) error {
	return f(ctx, jobs, done)
}

func TestPackFilters(t *testing.T) {
	src, out := t.TempDir(), t.TempDir()
	tr := tree{"a.txt": "a", "b.log": "b", "logs/c.log": "c", "keep/d.txt": "d", ".env": "e", "keep/.x/y": "y"}
	writeTree(t, src, tr)
	s, err := NewSettings(4*ChunkSize, 2*ChunkSize, true, []string{"*.log", "keep/.x"}, false)
	must(t, err)
	run(t, src, out, s, Local{Jobs: 1})
	m, _ := readManifest(t, out)
	checkCARs(t, src, out, m, tree{"a.txt": "a", "logs": "/", "keep": "/", "keep/d.txt": "d", ".env": "e"})
}
