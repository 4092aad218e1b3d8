package pack

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/ferry-dev/ferry/internal/ipfstest"
	commp "github.com/filecoin-project/go-fil-commp-hashhash"
	files "github.com/ipfs/boxo/files"
	unixfile "github.com/ipfs/boxo/ipld/unixfs/file"
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
	for i := range 3000 {
		tr[path.Join("many", strings.Repeat("n", 60)+"-"+strconv.Itoa(i))] = strconv.Itoa(i)
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
	if m.Root != sum.Root {
		t.Errorf("manifest root %s, summary %s", m.Root, sum.Root)
	}
}
