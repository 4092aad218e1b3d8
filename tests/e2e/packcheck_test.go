//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/bits"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/internal/ipfstest"
	"github.com/ferry-dev/ferry/internal/proctest"
	commp "github.com/filecoin-project/go-fil-commp-hashhash"
	"github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/boxo/ipld/unixfs"
	unixfs_pb "github.com/ipfs/boxo/ipld/unixfs/pb"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"
	"github.com/ipld/go-ipld-prime"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/codec/dagjson"
	"github.com/multiformats/go-multicodec"
	"github.com/multiformats/go-multihash"
	"golang.org/x/sys/unix"
)

// manifest is docs/packing.md's manifest.json, the part the tests read.
type manifest struct {
	Name     string `json:"name"`
	Root     string `json:"root"`
	NPieces  int    `json:"n_pieces"`
	Pieces   []packPiece
	Contents []struct {
		Type       string `json:"type"`
		Path       string `json:"path"`
		CID        string `json:"cid"`
		Target     string `json:"target"`
		ByteLength int64  `json:"byte_length"`
		SHA256     string `json:"sha256"`
		Parts      []struct {
			Car       string `json:"car"`
			PieceCID  string `json:"piece_cid"`
			Offset    int64  `json:"offset"`
			Length    int64  `json:"length"`
			CarOffset int64  `json:"car_offset"`
			CarLength int64  `json:"car_length"`
		} `json:"parts"`
	} `json:"contents"`
	Skipped []struct {
		Path   string `json:"path"`
		Reason string `json:"reason"`
	} `json:"skipped"`
}

// packPiece is one CAR of a manifest.
type packPiece struct {
	Car       string `json:"car"`
	Index     int    `json:"index"`
	Kind      string `json:"kind"`
	Root      string `json:"root"`
	Size      int64  `json:"size"`
	MD5       string `json:"md5"`
	PieceCID  string `json:"piece_cid"`
	PieceSize uint64 `json:"piece_size"`
	URL       string `json:"url"`
}

func readManifest(t *testing.T, out string) (*manifest, []byte) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(out, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	m := new(manifest)
	if err := json.Unmarshal(data, m); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	if m.NPieces != len(m.Pieces) || len(m.Pieces) == 0 {
		t.Fatalf("manifest: n_pieces %d, %d pieces", m.NPieces, len(m.Pieces))
	}
	return m, data
}

// runFerry runs the ferry binary to completion and returns its combined
// output, failing the test if it fails.
func runFerry(t *testing.T, args ...string) string {
	t.Helper()
	out, err := ferryCmd(args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ferry %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func ferryCmd(args ...string) *exec.Cmd { return command(nil, bins.ferry, args...) }

// command runs bin in the test's environment without FERRY_* and with env,
// killed if it runs for more than 5 minutes.
func command(env []string, bin string, args ...string) *exec.Cmd {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(proctest.CleanEnv(), env...)
	cmd.Cancel = func() error { cancel(); return cmd.Process.Kill() }
	return cmd
}

// withoutDACEnv makes the test binary, started with it, drop the
// capabilities that let root read any file and exec its arguments: root
// reads a chmod 000 file, so a test running as root (CI containers) makes
// a file unreadable to ferry this way. See TestMain.
const withoutDACEnv = "E2E_EXEC_WITHOUT_DAC"

// execWithoutDAC drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the
// bounding, inheritable, permitted and effective sets and execs args: the
// program runs as uid 0 still, but file permission bits apply to it. The
// sets are per thread, so the thread that drops them is the one that
// execs.
func execWithoutDAC(args []string) {
	runtime.LockOSThread()
	caps := []uintptr{unix.CAP_DAC_OVERRIDE, unix.CAP_DAC_READ_SEARCH}
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "e2e: %s: %v\n", what, err)
		os.Exit(3)
	}
	for _, c := range caps {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, c, 0, 0, 0); err != nil {
			fail("prctl(PR_CAPBSET_DROP)", err)
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		fail("capget", err)
	}
	for _, c := range caps {
		bit := uint32(1) << (c % 32)
		data[c/32].Effective &^= bit
		data[c/32].Permitted &^= bit
		data[c/32].Inheritable &^= bit
	}
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		fail("capset", err)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, withoutDACEnv+"=") {
			env = append(env, kv)
		}
	}
	fail("exec "+args[0], syscall.Exec(args[0], args, env))
}

// unreadableToFerry makes path unreadable to the ferry processes cmdFor
// starts and reports whether it is: chmod 000 for a user; for root, chmod
// 000 and ferry started without the capabilities that override it. It is
// false only when root cannot drop them (a container without
// CAP_SETPCAP): then ferry reads the file, and the test must expect it
// packed.
func unreadableToFerry(t *testing.T, path string) (unreadable bool, cmdFor func(args ...string) *exec.Cmd) {
	t.Helper()
	if err := os.Chmod(path, 0); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		if f, err := os.Open(path); err == nil {
			f.Close()
			t.Fatalf("%s is chmod 000 and still readable by uid %d", path, os.Geteuid())
		}
		return true, ferryCmd
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	wrap := func(bin string, args ...string) *exec.Cmd {
		return command([]string{withoutDACEnv + "=1"}, self, append([]string{bin}, args...)...)
	}
	probe, err := wrap("/bin/cat", path).CombinedOutput()
	switch {
	case err == nil:
		t.Fatalf("root without CAP_DAC_OVERRIDE read the chmod 000 %s", path)
	case strings.Contains(string(probe), "Permission denied"):
		t.Logf("running as root: ferry runs without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so %s is unreadable to it", filepath.Base(path))
		return true, func(args ...string) *exec.Cmd { return wrap(bins.ferry, args...) }
	case strings.Contains(string(probe), "e2e: "):
		t.Logf("running as root and unable to drop CAP_DAC_OVERRIDE (%s): ferry reads the chmod 000 %s, and the test expects it packed",
			bytes.TrimSpace(probe), filepath.Base(path))
		return false, ferryCmd
	}
	t.Fatalf("probing %s without CAP_DAC_OVERRIDE: %v\n%s", path, err, probe)
	return false, nil
}

// requirePiece requires piece to be go-fil-commp-hashhash's over what was
// written to cp, and returns the padded size: a piece CID v2 (FRC-0069)
// whose multihash digest is the padding (uvarint), the tree's height, then
// the root; or a v1 whose digest is the root (the padded size is the
// caller's to compare).
func requirePiece(t *testing.T, what string, cp *commp.Calc, piece string) (padded uint64) {
	t.Helper()
	digest, padded, err := cp.Digest()
	if err != nil {
		t.Fatal(err)
	}
	pc, err := cid.Parse(piece)
	if err != nil {
		t.Fatalf("%s: piece %q: %v", what, piece, err)
	}
	mh, err := multihash.Decode(pc.Hash())
	if err != nil {
		t.Fatal(err)
	}
	height := bits.TrailingZeros64(padded / 32)
	switch n := len(mh.Digest); {
	case multicodec.Code(pc.Type()) == multicodec.FilCommitmentUnsealed && multicodec.Code(mh.Code) == multicodec.Sha2_256Trunc254Padded:
		if !bytes.Equal(mh.Digest, digest) {
			t.Fatalf("%s: ferry's piece %s is not go-fil-commp-hashhash's root %x over its bytes", what, piece, digest)
		}
	case n < 33 || !bytes.Equal(mh.Digest[n-32:], digest) || int(mh.Digest[n-33]) != height:
		t.Fatalf("%s: ferry's piece %s is not go-fil-commp-hashhash's root %x at height %d over its bytes", what, piece, digest, height)
	}
	return padded
}

// carBlocks is what the test learned of every CAR of a pack, read with
// go-car alone.
type carBlocks struct {
	in    map[cid.Cid]string    // block → the CAR holding it
	links map[cid.Cid][]cid.Cid // block → the blocks it links to
	pb    map[cid.Cid][]byte    // every dag-pb block's bytes
	cbor  map[cid.Cid][]byte    // every dag-cbor block's bytes (the listings)
}

// checkPieces checks every CAR of a manifest against its file in out,
// with go-car, sha256, md5 and go-fil-commp-hashhash: the file is named
// by its CAR CID, its size, md5 and piece are the manifest's, its header
// names the manifest's root, and every block's bytes hash to its CID.
// Then the DAGs: no block is in two CARs (the tree repeats none), every
// block of a CAR is reachable from its root, everything a data CAR's root
// reaches is in that CAR, and the tree CAR's root reaches every file.
func checkPieces(t *testing.T, out string, m *manifest) *carBlocks {
	t.Helper()
	cb := &carBlocks{in: map[cid.Cid]string{}, links: map[cid.Cid][]cid.Cid{}, pb: map[cid.Cid][]byte{}, cbor: map[cid.Cid][]byte{}}
	trees := 0
	for i, p := range m.Pieces {
		if p.Kind == "tree" {
			trees++
			if p.Root != m.Root {
				t.Fatalf("the tree CAR %s has root %s, the manifest's root is %s", p.Car, p.Root, m.Root)
			}
		} else if p.Kind != "data" {
			t.Fatalf("piece %d: kind %q", i, p.Kind)
		}
		cb.readCAR(t, filepath.Join(out, p.Car+".car"), p)
	}
	if trees != 1 {
		t.Fatalf("%d tree CARs, want 1", trees)
	}
	for _, p := range m.Pieces {
		root := cid.MustParse(p.Root)
		reached := cb.reach(t, root)
		for c, holder := range cb.in {
			if holder == p.Car && !reached[c] {
				t.Fatalf("CAR %s holds %s, which its root %s does not reach", p.Car, c, p.Root)
			}
		}
		if p.Kind == "data" {
			for c := range reached {
				if cb.in[c] != p.Car {
					t.Fatalf("data CAR %s: its root %s reaches %s, which is in CAR %q: the CAR does not import on its own", p.Car, p.Root, c, cb.in[c])
				}
			}
		}
	}
	return cb
}

// readCAR reads one CAR in one pass and records its blocks.
func (cb *carBlocks) readCAR(t *testing.T, file string, p packPiece) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatalf("the manifest's CAR: %v", err)
	}
	defer f.Close()
	sum, md, cp := sha256.New(), md5.New(), new(commp.Calc)
	tee := io.TeeReader(bufio.NewReaderSize(f, 1<<20), io.MultiWriter(sum, md, cp))
	br, err := car.NewBlockReader(tee)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if br.Version != 1 || len(br.Roots) != 1 || br.Roots[0].String() != p.Root {
		t.Fatalf("%s: CARv%d with roots %v, want a CARv1 with the manifest's root %s", file, br.Version, br.Roots, p.Root)
	}
	for {
		blk, err := br.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		c := blk.Cid()
		if got, err := c.Prefix().Sum(blk.RawData()); err != nil || !got.Equals(c) {
			t.Fatalf("%s: block %s hashes to %v (%v)", file, c, got, err)
		}
		if other, ok := cb.in[c]; ok {
			t.Fatalf("block %s is in CAR %s and in CAR %s", c, other, p.Car)
		}
		cb.in[c] = p.Car
		cb.links[c] = linksOf(t, c, blk.RawData())
		switch multicodec.Code(c.Type()) {
		case multicodec.DagPb:
			cb.pb[c] = blk.RawData()
		case multicodec.DagCbor:
			cb.cbor[c] = blk.RawData()
		}
	}
	if n, err := io.Copy(io.Discard, tee); err != nil || n != 0 {
		t.Fatalf("%s: %d bytes after the last block (%v)", file, n, err)
	}
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	carCID := cid.NewCidV1(uint64(multicodec.Car), mustMH(sum.Sum(nil)))
	if filepath.Base(file) != carCID.String()+".car" || p.Car != carCID.String() {
		t.Fatalf("%s: its bytes' CAR CID is %s (manifest: %s)", file, carCID, p.Car)
	}
	if st.Size() != p.Size || hex.EncodeToString(md.Sum(nil)) != p.MD5 {
		t.Fatalf("%s: %d bytes, md5 %x; the manifest says %d, %s", file, st.Size(), md.Sum(nil), p.Size, p.MD5)
	}
	if padded := requirePiece(t, file, cp, p.PieceCID); padded != p.PieceSize {
		t.Fatalf("%s: padded piece size %d, the manifest says %d", file, padded, p.PieceSize)
	}
}

func mustMH(digest []byte) multihash.Multihash {
	mh, err := multihash.Encode(digest, multihash.SHA2_256)
	if err != nil {
		panic(err)
	}
	return mh
}

// linksOf decodes a block with go-ipld-prime's codecs and lists its links.
func linksOf(t *testing.T, c cid.Cid, data []byte) []cid.Cid {
	t.Helper()
	ls, err := ipfstest.Links(c, data)
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

// reach is every block reachable from root; each must be in some CAR.
func (cb *carBlocks) reach(t *testing.T, root cid.Cid) map[cid.Cid]bool {
	t.Helper()
	seen := map[cid.Cid]bool{}
	stack := []cid.Cid{root}
	for len(stack) > 0 {
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[c] {
			continue
		}
		if _, ok := cb.in[c]; !ok {
			t.Fatalf("block %s (under %s) is in no CAR", c, root)
		}
		seen[c] = true
		stack = append(stack, cb.links[c]...)
	}
	return seen
}

// requireOutDir requires out to hold exactly the manifest, the pack's
// state and a file per piece.
func requireOutDir(t *testing.T, out string, m *manifest) {
	t.Helper()
	want := []string{".ferry-pack", "manifest.json"}
	for _, p := range m.Pieces {
		want = append(want, p.Car+".car")
	}
	sort.Strings(want)
	entries, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("%s holds\n%s\nwant the manifest's pieces, manifest.json and .ferry-pack:\n%s", out, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// unixfsType is the UnixFS type of a dag-pb block of the pack, decoded
// with boxo's unixfs package.
func (cb *carBlocks) unixfsType(t *testing.T, c string) unixfs_pb.Data_DataType {
	t.Helper()
	data, ok := cb.pb[cid.MustParse(c)]
	if !ok {
		t.Fatalf("%s is no dag-pb block of the pack", c)
	}
	n, err := merkledag.DecodeProtobuf(data)
	if err != nil {
		t.Fatalf("%s: %v", c, err)
	}
	fsn, err := unixfs.FSNodeFromBytes(n.Data())
	if err != nil {
		t.Fatalf("%s: %v", c, err)
	}
	return fsn.Type()
}

// listingRoot and listingList are a data CAR's listing blocks
// (docs/packing.md), read as dag-json.
type listingRoot struct {
	FerryPack int       `json:"ferry-pack"`
	Car       int       `json:"car"`
	Lists     []jsonCID `json:"lists"`
}

type listingList struct {
	Entries []struct {
		Path   string    `json:"path"`
		Size   int64     `json:"size"`
		File   *jsonCID  `json:"file"`
		Offset int64     `json:"offset"`
		Length int64     `json:"length"`
		Blocks []jsonCID `json:"blocks"`
	} `json:"entries"`
}

// jsonCID is a link in dag-json.
type jsonCID struct {
	CID string `json:"/"`
}

// cborAsJSON decodes a dag-cbor block of the pack with go-ipld-prime and
// unmarshals its dag-json form into v.
func (cb *carBlocks) cborAsJSON(t *testing.T, c string, v any) {
	t.Helper()
	data, ok := cb.cbor[cid.MustParse(c)]
	if !ok {
		t.Fatalf("%s is no dag-cbor block of the pack", c)
	}
	n, err := ipld.Decode(data, dagcbor.Decode)
	if err != nil {
		t.Fatalf("%s: %v", c, err)
	}
	js, err := ipld.Encode(n, dagjson.Encode)
	if err != nil {
		t.Fatalf("%s: %v", c, err)
	}
	if err := json.Unmarshal(js, v); err != nil {
		t.Fatalf("%s: %v in %s", c, err, js)
	}
}

// checkListings requires every data CAR's listing to name what the
// manifest says the CAR holds, in walk order: a whole file with its file
// CID, a part with its range of the file and the subtrees that hold it.
func checkListings(t *testing.T, cb *carBlocks, m *manifest) {
	t.Helper()
	want := map[string][]string{}
	for _, e := range m.Contents {
		for _, p := range e.Parts {
			if len(e.Parts) == 1 {
				want[p.Car] = append(want[p.Car], fmt.Sprintf("%s: %d bytes, file %s", e.Path, e.ByteLength, e.CID))
			} else {
				want[p.Car] = append(want[p.Car], fmt.Sprintf("%s: %d bytes, %d+%d", e.Path, e.ByteLength, p.Offset, p.Length))
			}
		}
	}
	lists, most := 0, 0
	for _, p := range m.Pieces {
		if p.Kind != "data" {
			continue
		}
		var root listingRoot
		cb.cborAsJSON(t, p.Root, &root)
		if root.FerryPack != 1 || root.Car != p.Index || len(root.Lists) == 0 {
			t.Fatalf("CAR %d (%s): its listing's root is %+v", p.Index, p.Car, root)
		}
		lists, most = lists+len(root.Lists), max(most, len(root.Lists))
		var got []string
		for _, l := range root.Lists {
			var list listingList
			cb.cborAsJSON(t, l.CID, &list)
			for _, e := range list.Entries {
				switch {
				case e.File != nil && len(e.Blocks) == 0:
					got = append(got, fmt.Sprintf("%s: %d bytes, file %s", e.Path, e.Size, e.File.CID))
				case e.File == nil && len(e.Blocks) > 0:
					got = append(got, fmt.Sprintf("%s: %d bytes, %d+%d", e.Path, e.Size, e.Offset, e.Length))
				default:
					t.Fatalf("CAR %d: listing entry %+v is neither a file nor a part", p.Index, e)
				}
			}
		}
		if !slices.Equal(got, want[p.Car]) {
			t.Fatalf("CAR %d (%s) lists\n%s\nthe manifest puts in it\n%s", p.Index, p.Car,
				strings.Join(got, "\n"), strings.Join(want[p.Car], "\n"))
		}
	}
	t.Logf("the data CARs' listings: %d list blocks, at most %d in one CAR", lists, most)
}
