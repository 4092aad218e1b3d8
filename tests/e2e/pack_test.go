//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/internal/proctest"
	"github.com/ferry-dev/ferry/internal/testtree"
	unixfs_pb "github.com/ipfs/boxo/ipld/unixfs/pb"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multicodec"
	"github.com/multiformats/go-multihash"
	"github.com/multiformats/go-varint"
)

const MiB = testtree.MiB

// kuboAdd are the flags with which kubo 0.32's ipfs add gives the UnixFS
// 2025 profile's file CIDs for files up to 174 MiB: kubo's balanced DAG
// has 174 links a node where the profile has 1024, so a larger file has
// another level in kubo's DAG and another CID.
var kuboAdd = []string{"add", "--only-hash", "--cid-version=1", "--raw-leaves", "--chunker=size-1048576"}

// TestPackThroughKubo packs a tree of every case into several CARs and
// checks the output against independent computations: go-car, sha256, md5
// and go-fil-commp-hashhash over every CAR; go-ipld-prime over every
// block's links and every listing; the file's bytes under every part's
// CAR range; kubo's ipfs add over every file and directory; and kubo,
// after importing every CAR, reproducing the tree byte for byte and every
// file by its CID.
func TestPackThroughKubo(t *testing.T) {
	ps := proctest.New(t, os.Getenv("E2E_LOGDIR"))
	dir := t.TempDir()
	began := time.Now()
	tree, err := testtree.Write(filepath.Join(dir, "tree"), testtree.Spec{Seed: 18,
		Big: 174 * MiB, Split: 20 * MiB, HAMT: 5000, Skipped: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the tree written in %s", time.Since(began).Round(time.Millisecond))
	unreadable, ferryAs := unreadableToFerry(t, filepath.Join(tree.Dir, tree.Unreadable))
	if !unreadable {
		tree.Files[tree.Unreadable] = testtree.SecretSize
	}
	// ref is the tree as a default pack sees it, for kubo and diff.
	ref := filepath.Join(dir, "ref")
	if err := tree.Copy(ref, !unreadable); err != nil {
		t.Fatal(err)
	}

	out := filepath.Join(dir, "out")
	began = time.Now()
	cmd := ferryAs("pack", tree.Dir, "--out", out, "--car-size", "24MiB", "--shard-size", "8MiB", "--sha256")
	if output, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ferry pack: %v\n%s", err, output)
	} else {
		t.Logf("ferry pack of %s in %s:\n%s", tree.Dir, time.Since(began).Round(time.Millisecond), tail(output, 8))
	}
	began = time.Now()
	m, _ := readManifest(t, out)
	requireOutDir(t, out, m)
	cb := checkPieces(t, out, m)
	checkContents(t, tree, m, unreadable)
	checkListings(t, cb, m)
	// The tree holds a HAMT and basic directories: the cases either side
	// of the threshold.
	for _, e := range m.Contents {
		if e.Type != "directory" {
			continue
		}
		want := unixfs_pb.Data_Directory
		if e.Path == testtree.HAMTDir {
			want = unixfs_pb.Data_HAMTShard
		}
		if got := cb.unixfsType(t, e.CID); got != want {
			t.Fatalf("directory %q is a UnixFS %s, want %s", e.Path, got, want)
		}
	}
	checkParts(t, tree.Dir, out, m)
	t.Logf("the CARs and the manifest checked in %s", time.Since(began).Round(time.Millisecond))
	var total int64
	for _, p := range m.Pieces {
		total += p.Size
	}
	t.Logf("%d CARs (%d data, 1 tree), %.1f MiB in all", len(m.Pieces), len(m.Pieces)-1, float64(total)/MiB)

	k := newKubo(t, ps, "pack")
	t.Run("file and directory CIDs are kubo's", func(t *testing.T) {
		checkKuboCIDs(t, k, ref, tree, m)
	})
	t.Run("every CAR imported, kubo gives back the tree byte for byte", func(t *testing.T) {
		args := []string{"dag", "import", "--pin-roots=false"}
		for _, p := range m.Pieces {
			args = append(args, filepath.Join(out, p.Car+".car"))
		}
		k.run(args...)
		copyDir := filepath.Join(dir, "copy")
		k.run("get", "--progress=false", "-o", copyDir, m.Root)
		if diff, err := exec.Command("diff", "-r", "--no-dereference", ref, copyDir).CombinedOutput(); err != nil {
			t.Fatalf("diff -r --no-dereference of the tree and ipfs get of %s: %v\n%s", m.Root, err, tail(diff, 40))
		}
	})
	t.Run("kubo cats every file by the manifest's CID", func(t *testing.T) {
		k.start(ps)
		for _, e := range m.Contents {
			if e.Type == "file" {
				requireCat(t, k, e.CID, filepath.Join(tree.Dir, filepath.FromSlash(e.Path)))
			}
		}
	})
}

// checkContents requires the manifest's contents to be the tree: every
// file, directory and symlink a default pack includes, in walk order, and
// the unreadable file skipped with its reason.
func checkContents(t *testing.T, tree *testtree.Tree, m *manifest, unreadable bool) {
	t.Helper()
	want := len(tree.Files) + len(tree.Dirs) + len(tree.Symlinks)
	if len(m.Contents) != want {
		t.Errorf("the manifest lists %d entries, the tree has %d files, %d directories and %d symlinks",
			len(m.Contents), len(tree.Files), len(tree.Dirs), len(tree.Symlinks))
	}
	seen := map[string]bool{}
	for i, e := range m.Contents {
		seen[e.Path] = true
		if i > 0 && !walkOrder(m.Contents[i-1].Path, e.Path) {
			t.Errorf("contents: %q after %q, not in walk order", e.Path, m.Contents[i-1].Path)
		}
		if _, err := cid.Parse(e.CID); err != nil {
			t.Errorf("contents: %q has CID %q: %v", e.Path, e.CID, err)
		}
		switch e.Type {
		case "file":
			if size, ok := tree.Files[e.Path]; !ok || size != e.ByteLength {
				t.Errorf("contents: file %q of %d bytes; the tree's is %d (present: %v)", e.Path, e.ByteLength, size, ok)
			}
		case "directory":
			if !slices.Contains(tree.Dirs, e.Path) {
				t.Errorf("contents: directory %q is not one of the tree's", e.Path)
			}
		case "symlink":
			if target, ok := tree.Symlinks[e.Path]; !ok || target != e.Target {
				t.Errorf("contents: symlink %q → %q; the tree's → %q", e.Path, e.Target, target)
			}
		default:
			t.Errorf("contents: %q of type %q", e.Path, e.Type)
		}
	}
	for _, h := range tree.Hidden {
		for p := range seen {
			if p == h || strings.HasPrefix(p, h+"/") {
				t.Errorf("the hidden %q is packed (%q)", h, p)
			}
		}
	}
	var skipped []string
	for _, s := range m.Skipped {
		skipped = append(skipped, s.Path+": "+s.Reason)
	}
	switch {
	case unreadable && (len(m.Skipped) != 1 || m.Skipped[0].Path != tree.Unreadable ||
		!strings.Contains(m.Skipped[0].Reason, "permission denied")):
		t.Errorf("skipped %q, want only %s for permission denied", skipped, tree.Unreadable)
	case !unreadable && len(m.Skipped) != 0:
		t.Errorf("skipped %q, want nothing (ferry reads the chmod 000 file as root)", skipped)
	}
}

// walkOrder reports whether a comes before b in a walk sorted by path,
// component by component in byte order.
func walkOrder(a, b string) bool {
	split := func(p string) []string {
		if p == "" {
			return nil
		}
		return strings.Split(p, "/")
	}
	return slices.Compare(split(a), split(b)) < 0
}

// checkParts reads the CAR bytes each file part's car_offset and
// car_length name: they must be CAR sections whose blocks hash to their
// CIDs and whose raw leaves, in order, are the part's bytes of the file;
// the parts must cover the file in order; a file's sha256 must be the
// file's.
func checkParts(t *testing.T, src, out string, m *manifest) {
	t.Helper()
	pieces := map[string]string{}
	for _, p := range m.Pieces {
		pieces[p.Car] = p.PieceCID
	}
	split := 0
	for _, e := range m.Contents {
		if e.Type != "file" {
			continue
		}
		file := filepath.Join(src, filepath.FromSlash(e.Path))
		if got := hex.EncodeToString(fileSHA256(t, file, 0, e.ByteLength)); e.SHA256 != got {
			t.Fatalf("%s: sha256 %q, the file's is %s", e.Path, e.SHA256, got)
		}
		if len(e.Parts) == 0 {
			t.Fatalf("%s: no parts", e.Path)
		}
		if len(e.Parts) > 1 {
			split++
		}
		var at int64
		for _, p := range e.Parts {
			if p.Offset != at || p.Length < 0 || pieces[p.Car] != p.PieceCID || p.PieceCID == "" {
				t.Fatalf("%s: part %+v after byte %d (the CAR's piece: %q)", e.Path, p, at, pieces[p.Car])
			}
			at += p.Length
			got := leafBytesSHA256(t, filepath.Join(out, p.Car+".car"), p.CarOffset, p.CarLength)
			if want := fileSHA256(t, file, p.Offset, p.Length); !bytes.Equal(got, want) {
				t.Fatalf("%s: the raw leaves in bytes %d+%d of CAR %s are not bytes %d+%d of the file",
					e.Path, p.CarOffset, p.CarLength, p.Car, p.Offset, p.Length)
			}
		}
		if at != e.ByteLength {
			t.Fatalf("%s: the parts cover %d of %d bytes", e.Path, at, e.ByteLength)
		}
	}
	if split == 0 {
		t.Fatal("no file was split into parts")
	}
}

// leafBytesSHA256 parses a range of a CAR file as CARv1 sections, checks
// each block against its CID, and hashes the raw blocks' bytes in order.
func leafBytesSHA256(t *testing.T, file string, off, n int64) []byte {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := bufio.NewReader(io.NewSectionReader(f, off, n))
	h := sha256.New()
	for {
		size, err := varint.ReadUvarint(r)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s at %d+%d: %v", file, off, n, err)
		}
		section := make([]byte, size)
		if _, err := io.ReadFull(r, section); err != nil {
			t.Fatalf("%s at %d+%d: a section of %d bytes: %v", file, off, n, size, err)
		}
		l, c, err := cid.CidFromBytes(section)
		if err != nil {
			t.Fatalf("%s at %d+%d: %v", file, off, n, err)
		}
		if got, err := c.Prefix().Sum(section[l:]); err != nil || !got.Equals(c) {
			t.Fatalf("%s at %d+%d: block %s hashes to %v", file, off, n, c, got)
		}
		if multicodec.Code(c.Type()) == multicodec.Raw {
			h.Write(section[l:])
		}
	}
	return h.Sum(nil)
}

func fileSHA256(t *testing.T, file string, off, n int64) []byte {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if got, err := io.Copy(h, io.NewSectionReader(f, off, n)); err != nil || got != n {
		t.Fatalf("%s: %d of bytes %d+%d: %v", file, got, off, n, err)
	}
	return h.Sum(nil)
}

// checkKuboCIDs requires every file's and directory's CID in the manifest
// to be the one kubo's ipfs add -r gives over ref (the tree without what
// a default pack leaves out), and the special files' CIDs to be ipfs add
// of each on its own. Directories agree because every one is far from the
// HAMT threshold in both size estimates, kubo 0.32's (names plus CID
// bytes) and the 2025 profile's (the dag-pb block): hamt/'s 5,000 links
// of 48-byte names come to about 1.6 and 1.8 times the threshold, the
// other directories to a few KiB; both then build the same basic
// directory or the same HAMT (fanout 256, murmur3).
func checkKuboCIDs(t *testing.T, k *kubo, ref string, tree *testtree.Tree, m *manifest) {
	kubos := map[string]string{}
	lines := k.run(append(slices.Clone(kuboAdd), "-r", "--progress=false", ref)...)
	for _, line := range strings.Split(lines, "\n") {
		f := strings.SplitN(line, " ", 3)
		if len(f) != 3 || f[0] != "added" {
			t.Fatalf("ipfs add -r said %q", line)
		}
		rel, ok := strings.CutPrefix(f[2], filepath.Base(ref))
		if !ok {
			t.Fatalf("ipfs add -r named %q, not under %s", f[2], filepath.Base(ref))
		}
		kubos[strings.TrimPrefix(rel, "/")] = f[1]
	}
	checked := 0
	for _, e := range m.Contents {
		want, ok := kubos[e.Path]
		switch {
		case e.Type == "file" && e.ByteLength > 174*MiB:
			t.Fatalf("%s: %d bytes, more than kubo's one level of 174 links", e.Path, e.ByteLength)
		case !ok:
			t.Errorf("ipfs add -r did not list %s %q", e.Type, e.Path)
			continue
		case e.CID != want:
			t.Errorf("%s %q: ferry's CID %s, kubo's %s", e.Type, e.Path, e.CID, want)
		}
		checked++
	}
	if kubos[""] != m.Root {
		t.Errorf("the tree's root: ferry's %s, kubo's %s", m.Root, kubos[""])
	}
	for _, name := range []string{testtree.Empty, testtree.ExactChunk, testtree.OverChunk, testtree.SplitFile, testtree.BigFile} {
		one := k.run(append(slices.Clone(kuboAdd), "-Q", filepath.Join(ref, filepath.FromSlash(name)))...)
		if one != kubos[name] {
			t.Errorf("%s: ipfs add alone gives %s, within ipfs add -r %s", name, one, kubos[name])
		}
	}
	t.Logf("%d of the manifest's %d entries have kubo's CIDs; the root %s", checked, len(m.Contents), m.Root)
}

// requireCat requires kubo's daemon to cat cid as the bytes of file.
func requireCat(t *testing.T, k *kubo, c, file string) {
	t.Helper()
	resp, err := http.Post("http://"+k.api+"/api/v0/cat?arg="+url.QueryEscape(c), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		t.Fatalf("ipfs cat %s: %d %s", c, resp.StatusCode, b)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		t.Fatalf("ipfs cat %s: %v", c, err)
	}
	st, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if n != st.Size() || !bytes.Equal(h.Sum(nil), fileSHA256(t, file, 0, n)) {
		t.Fatalf("ipfs cat %s: %d bytes that are not %s's %d", c, n, file, st.Size())
	}
}

// tail is the last n lines of out.
func tail(out []byte, n int) string {
	ls := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

// TestAKilledPackResumesToTheSameManifest SIGKILLs ferry pack twice, just
// after the first CAR appears in --out and again once half of them are
// there (usually with the next CAR half written), runs it again to the
// end, and requires the manifest of an uninterrupted pack of the same
// tree, byte for byte, with --out holding exactly its CARs; a third run
// changes nothing.
func TestAKilledPackResumesToTheSameManifest(t *testing.T) {
	ps := proctest.New(t, os.Getenv("E2E_LOGDIR"))
	dir := t.TempDir()
	tree, err := testtree.Write(filepath.Join(dir, "tree"), testtree.Spec{Seed: 9,
		Split: 12*MiB + 3, Bulk: 16, BulkSize: 3*MiB + 17})
	if err != nil {
		t.Fatal(err)
	}
	pack := func(out string) []string {
		return []string{"pack", tree.Dir, "--out", out, "--car-size", "6MiB", "--shard-size", "4MiB", "--jobs", "1"}
	}
	whole := filepath.Join(dir, "whole")
	runFerry(t, pack(whole)...)
	want, wantBytes := readManifest(t, whole)

	out := filepath.Join(dir, "out")
	for kill, at := range []int{1, len(want.Pieces) / 2} {
		p := ps.Start(fmt.Sprintf("pack-killed-%d", kill+1), bins.ferry, pack(out)...)
		for len(carsIn(t, out)) < at {
			if !p.Running() {
				t.Fatalf("ferry pack run %d ended (%v) before %d CARs were there: nothing to kill\n%s",
					kill+1, p.Err(), at, proctest.Tail(p.Log, 20))
			}
			time.Sleep(2 * time.Millisecond)
		}
		p.Kill()
		if err := p.Err(); err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("ferry pack run %d ended by itself (%v) before the SIGKILL", kill+1, err)
		}
		tmp, _ := filepath.Glob(filepath.Join(out, ".ferry-pack", "tmp", "*"))
		t.Logf("SIGKILL %d: %d of %d CARs in --out, %d temp files", kill+1, len(carsIn(t, out)), len(want.Pieces), len(tmp))
	}
	if n := len(carsIn(t, out)); n >= len(want.Pieces) {
		t.Fatalf("the kills left %d CARs of %d: the pack was not interrupted", n, len(want.Pieces))
	}
	runFerry(t, pack(out)...)
	got, gotBytes := readManifest(t, out)
	if !bytes.Equal(gotBytes, wantBytes) {
		t.Fatalf("the resumed pack's manifest differs from the uninterrupted one's:\n%s\nwant:\n%s", gotBytes, wantBytes)
	}
	requireOutDir(t, out, got)
	checkPieces(t, out, got)
	if tmp, _ := filepath.Glob(filepath.Join(out, ".ferry-pack", "tmp", "*")); len(tmp) != 0 {
		t.Fatalf("the finished pack left temp files: %q", tmp)
	}

	before := snapshot(t, out)
	runFerry(t, pack(out)...)
	if after := snapshot(t, out); after != before {
		t.Fatalf("a third run over a finished pack changed --out:\n%s\nbefore:\n%s", after, before)
	}
}

// carsIn lists the .car files directly in dir.
func carsIn(t *testing.T, dir string) []string {
	t.Helper()
	cars, err := filepath.Glob(filepath.Join(dir, "*.car"))
	if err != nil {
		t.Fatal(err)
	}
	return cars
}

// snapshot describes every CAR of out (name, size, modification time and
// inode: a CAR built again would differ) and the manifest's bytes (ferry
// writes it again at the end of every run).
func snapshot(t *testing.T, out string) string {
	t.Helper()
	entries, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range entries {
		if e.Name() == ".ferry-pack" || e.Name() == "manifest.json" {
			continue
		}
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		st, _ := info.Sys().(*syscall.Stat_t)
		fmt.Fprintf(&b, "%s %d %s inode %d\n", e.Name(), info.Size(), info.ModTime().Format(time.RFC3339Nano), st.Ino)
	}
	m, err := os.ReadFile(filepath.Join(out, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&b, "manifest.json sha256 %x\n", sha256.Sum256(m))
	return b.String()
}

// TestPackPublishesEveryCARToADeal packs into the CAR store of a running
// ferry serve with --publish: every CAR, the tree CAR too, must reach an
// aggregate and DEAL_PROCESSED at the simulator, with the manifest's
// piece, size, md5 and URL.
func TestPackPublishesEveryCARToADeal(t *testing.T) {
	ps := proctest.New(t, os.Getenv("E2E_LOGDIR"))
	dir := t.TempDir()
	tree, err := testtree.Write(filepath.Join(dir, "tree"), testtree.Spec{Seed: 5,
		Split: 5*MiB + 1, Bulk: 4, BulkSize: MiB + 300})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	// A minimum payload below the tree CAR's size, so that the last CAR
	// closes an aggregate on its own after --max-wait.
	f := startFerry(t, ps, "ferry-pack", "--car-store", out, "--min-payload", "1KiB")
	base := "http://" + f.addr + "/cars"
	runFerry(t, "pack", tree.Dir, "--out", out, "--car-size", "3MiB", "--shard-size", "2MiB",
		"--publish", "--server", "http://"+f.addr, "--write-token", writeToken, "--url-base", base)
	m, _ := readManifest(t, out)
	checkPieces(t, out, m)
	aggregates := map[uint64]bool{}
	for _, p := range m.Pieces {
		v := f.waitCar(p.Car, "DEAL_PROCESSED", 2*time.Minute)
		carURL := base + "/" + p.Car + ".car"
		if !samePiece(t, v.Piece, p.PieceCID) || v.PieceSize != p.PieceSize || v.Size != uint64(p.Size) || v.MD5 != p.MD5 || !slices.Equal(v.URLs, []string{carURL}) || p.URL != carURL {
			t.Fatalf("%s CAR %s: ferry has piece %s, %d bytes, md5 %s, URLs %v; the manifest %s, %d, %s, %s (want URL %s)",
				p.Kind, p.Car, v.Piece, v.Size, v.MD5, v.URLs, p.PieceCID, p.Size, p.MD5, p.URL, carURL)
		}
		if v.Aggregate == 0 {
			t.Fatalf("CAR %s is DEAL_PROCESSED in no aggregate", p.Car)
		}
		aggregates[v.Aggregate] = true
	}
	t.Logf("%d CARs published, dealt in %d aggregates", len(m.Pieces), len(aggregates))
	if out, err := exec.Command(bins.ferry, "status", "--server", f.addr, m.Pieces[len(m.Pieces)-1].Car).CombinedOutput(); err != nil || !strings.Contains(string(out), `"DEAL_PROCESSED"`) {
		t.Fatalf("ferry status of the last CAR: %v\n%s", err, out)
	}
}

// samePiece reports whether two piece CIDs, v1 or v2, name one root.
func samePiece(t *testing.T, a, b string) bool {
	t.Helper()
	root := func(s string) []byte {
		c, err := cid.Parse(s)
		if err != nil {
			t.Fatalf("piece %q: %v", s, err)
		}
		mh, err := multihash.Decode(c.Hash())
		if err != nil || len(mh.Digest) < 32 {
			t.Fatalf("piece %q: %v", s, err)
		}
		return mh.Digest[len(mh.Digest)-32:]
	}
	return bytes.Equal(root(a), root(b))
}
