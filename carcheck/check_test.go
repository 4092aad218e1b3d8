package carcheck

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/piece"
	commp "github.com/filecoin-project/go-fil-commp-hashhash"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"
	"github.com/multiformats/go-multihash"
	"github.com/multiformats/go-varint"
)

func TestCheckAgreesWithIndependentImplementations(t *testing.T) {
	sizes := []int{100, 1 << 10, 64 << 10, 1<<20 + 7, chunkSize, 3<<20 + 12345}
	for i, size := range sizes {
		t.Run(fmt.Sprintf("a random CARv1 of about %d bytes", size), func(t *testing.T) {
			data := makeCAR(t, int64(i), size)
			res := mustCheck(t, data, CheckOptions{})
			assertMatchesReferences(t, data, res)
		})
	}
}

func TestCheckSupportsCARv2ByItsDataPayload(t *testing.T) {
	for _, padding := range []uint64{0, 1, 4096} {
		t.Run(fmt.Sprintf("a CARv2 with %d bytes of padding before its payload", padding), func(t *testing.T) {
			v1 := makeCAR(t, 7, 300<<10)
			v2 := wrapV2(t, v1, padding)
			res := mustCheck(t, v2, CheckOptions{})
			assertMatchesReferences(t, v2, res)
			if inner := mustCheck(t, v1, CheckOptions{}); inner.Blocks != res.Blocks {
				t.Fatalf("blocks: v2 %d, v1 %d", res.Blocks, inner.Blocks)
			}
		})
	}
}

// The go-data-segment repository ships CARs with piece CIDs computed by
// other tools; ours must agree.
func TestCheckReproducesPublishedPieceCID(t *testing.T) {
	data, err := os.ReadFile("testdata/vda.png.car")
	if err != nil {
		t.Fatal(err)
	}
	res := mustCheck(t, data, CheckOptions{})
	if got, want := res.Commitment.V1().String(), "baga6ea4seaqnrm2n2g4m23t6rs26obxjw2tjtr7tcho24gepj2naqhevytduyoa"; got != want {
		t.Fatalf("piece CID %s, want %s", got, want)
	}
	if got, want := piece.Unpadded(res.Commitment.Padded), uint64(254<<10); got != want {
		t.Fatalf("unpadded piece size %d, want %d", got, want)
	}
	assertMatchesReferences(t, data, res)
}

// assertMatchesReferences compares a Result with go-fil-commp-hashhash,
// go-data-segment, go-car and crypto/md5, each fed the bytes separately.
func assertMatchesReferences(t *testing.T, data []byte, res *Result) {
	t.Helper()
	want := commpOf(t, data)
	if res.Commitment != want {
		t.Fatalf("commitment %+v, commp.Calc says %+v", res.Commitment, want)
	}
	if got, want := res.Commitment.Root, segmentRoot(t, data); got != want {
		t.Fatalf("root %x, go-data-segment says %x", got, want)
	}
	if got, want := res.Commitment.V1(), want.V1(); !got.Equals(want) {
		t.Fatalf("v1 CID %s, want %s", got, want)
	}
	back, err := piece.FromCID(res.Commitment.MustV2(), 0)
	if err != nil || back != res.Commitment {
		t.Fatalf("v2 CID round trip: %+v, %v", back, err)
	}
	if got, want := res.Size, uint64(len(data)); got != want {
		t.Fatalf("size %d, want %d", got, want)
	}
	sum := md5.Sum(data)
	if got, want := res.MD5, hex.EncodeToString(sum[:]); got != want {
		t.Fatalf("md5 %s, want %s", got, want)
	}
	roots, metas := sections(t, data)
	if got, want := res.Blocks, len(metas); got != want {
		t.Fatalf("blocks %d, go-car counts %d", got, want)
	}
	if fmt.Sprint(res.Roots) != fmt.Sprint(roots) {
		t.Fatalf("roots %v, go-car says %v", res.Roots, roots)
	}
}

func TestCheckHoldsBytesToExpectations(t *testing.T) {
	data := makeCAR(t, 1, 200<<10)
	sum := md5.Sum(data)
	good := hex.EncodeToString(sum[:])
	size := uint64(len(data))
	tests := []struct {
		name   string
		opts   CheckOptions
		kind   error
		reason string
	}{
		{"matching size and md5 (in upper case) pass", CheckOptions{ExpectSize: size, ExpectMD5: strings.ToUpper(good), MaxSize: size}, nil, ""},
		{"a different md5 fails naming both", CheckOptions{ExpectMD5: strings.Repeat("0", 32)},
			ErrMD5Mismatch, fmt.Sprintf("md5 %s does not match expected %s", good, strings.Repeat("0", 32))},
		{"an expected size larger than the bytes fails", CheckOptions{ExpectSize: size + 1},
			ErrSizeMismatch, fmt.Sprintf("size %d does not match expected %d", size, size+1)},
		{"an expected size smaller than the bytes fails", CheckOptions{ExpectSize: size - 1},
			ErrSizeMismatch, fmt.Sprintf("size exceeds the expected %d bytes", size-1)},
		{"more bytes than MaxSize fail", CheckOptions{MaxSize: size - 1},
			ErrTooLarge, fmt.Sprintf("size exceeds the limit of %d bytes", size-1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := Check(bytes.NewReader(data), tt.opts)
			if tt.kind == nil {
				if err != nil {
					t.Fatal(err)
				}
				if res.MD5 != good {
					t.Fatalf("md5 %s", res.MD5)
				}
				return
			}
			assertInvalid(t, err, tt.kind, tt.reason)
		})
	}
}

func TestCheckReadsNoMoreThanItNeedsToRejectASize(t *testing.T) {
	data := makeCAR(t, 2, 3<<20)
	for _, opts := range []CheckOptions{{MaxSize: 1 << 20}, {ExpectSize: 1 << 20}, {MaxSize: 2 << 20, ExpectSize: 1 << 20}} {
		cr := &countingReader{r: bytes.NewReader(data)}
		_, err := Check(cr, opts)
		if !IsInvalid(err) {
			t.Fatalf("%+v: err %v", opts, err)
		}
		if got, want := cr.n, int64(1<<20+1); got != want {
			t.Fatalf("%+v: read %d bytes, want %d", opts, got, want)
		}
	}
}

func TestCheckFindsBadBytes(t *testing.T) {
	data := makeCAR(t, 3, 600<<10)
	_, metas := sections(t, data)
	hdrEnd := int(metas[0].SourceOffset)
	m := metas[5]
	flipped := bytes.Clone(data)
	flipped[dataOffset(m)+m.Size/2] ^= 0x40
	id := metas[0] // the identity block: its digest is its bytes
	flippedID := bytes.Clone(data)
	flippedID[dataOffset(id)] ^= 0x01

	tests := []struct {
		name   string
		data   []byte
		kind   error
		reason string
	}{
		{"a flipped bit in a block is found with its number, CID and offset", flipped, ErrBlockMismatch,
			fmt.Sprintf("block 6 (%s) at offset %d: bytes do not match CID", m.Cid, m.SourceOffset)},
		{"a flipped bit in an identity block is found", flippedID, ErrBlockMismatch,
			fmt.Sprintf("block 1 (%s) at offset %d: bytes do not match CID", id.Cid, id.SourceOffset)},
		{"a CAR cut inside its header is truncated", data[:hdrEnd-3], ErrTruncated, "truncated header at offset 0: input ends inside it"},
		{"a CAR cut inside a block is truncated", data[:dataOffset(m)+10], ErrTruncated,
			fmt.Sprintf("truncated block 6 (%s) at offset %d: input ends after 10 of its %d bytes", m.Cid, m.SourceOffset, m.Size)},
		{"a CAR cut inside a CID is truncated", data[:m.SourceOffset+5], ErrTruncated,
			fmt.Sprintf("truncated section at offset %d: input ends inside its CID", m.SourceOffset)},
		{"a CAR cut inside a section length is truncated", cutInsideVarint(t, data, metas), ErrTruncated, ""},
		{"an empty input is truncated", nil, ErrTruncated, "empty input: no CAR header"},
		{"a garbage header is malformed", append([]byte("\x10garbage garbage!"), data[hdrEnd:]...), ErrMalformed, ""},
		{"a header of an unknown version is malformed", withHeader(t, data, `{"version":3,"roots":[]}`), ErrMalformed, ""},
		{"trailing zero bytes are a zero-length section", append(bytes.Clone(data), 0, 0, 0), ErrMalformed,
			fmt.Sprintf("section at offset %d: zero length", len(data))},
		{"a trailing partial section is truncated", append(bytes.Clone(data), 0x7f, 0x01, 0x55), ErrTruncated, ""},
		{"a trailing varint of 10 bytes is malformed", append(bytes.Clone(data), bytes.Repeat([]byte{0xff}, 10)...), ErrMalformed, ""},
		{"a section longer than 8 MiB is malformed", append(bytes.Clone(data), varint.ToUvarint(9<<20)...), ErrMalformed, ""},
		{"a CID of version 2 is malformed", append(bytes.Clone(data), 0x05, 0x02, 0x55, 0x00, 0x01, 0x00), ErrMalformed, ""},
		{"a CID longer than its section is malformed", append(bytes.Clone(data), 0x03, 0x01, 0x55, 0x00, 0x05), ErrMalformed, ""},
		{"an unknown multihash is unsupported", withSection(data, 0x01, 0x55, 0x80, 0x80, 0x80, 0x01, 0x01, 0xaa), ErrUnsupportedHash, ""},
		{"a CAR too short for a piece is too small", smallCAR(t), ErrTooSmall, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Check(bytes.NewReader(tt.data), CheckOptions{})
			assertInvalid(t, err, tt.kind, tt.reason)
		})
	}
}

// Flipping any bit of any block's bytes must be caught: a property, tried
// at seeded random places.
func TestCheckCatchesEveryBlockCorruption(t *testing.T) {
	data := makeCAR(t, 4, 256<<10)
	_, metas := sections(t, data)
	rng := rand.New(rand.NewSource(4))
	for range 100 {
		m := metas[rng.Intn(len(metas))]
		if m.Size == 0 {
			continue
		}
		bad := bytes.Clone(data)
		at := dataOffset(m) + uint64(rng.Int63n(int64(m.Size)))
		bad[at] ^= 1 << rng.Intn(8)
		if _, err := Check(bytes.NewReader(bad), CheckOptions{}); !errors.Is(err, ErrBlockMismatch) {
			t.Fatalf("flip at %d in block %s: err %v", at, m.Cid, err)
		}
	}
}

func TestCheckFindsBadCARv2(t *testing.T) {
	v1 := makeCAR(t, 5, 100<<10)
	v2 := wrapV2(t, v1, 0)
	var h car.Header
	if _, err := h.ReadFrom(bytes.NewReader(v2[car.PragmaSize:])); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		data []byte
		kind error
	}{
		{"a CARv2 cut inside its data payload is truncated", v2[:h.DataOffset+h.DataSize-1], ErrTruncated},
		{"a CARv2 cut before its index is truncated", v2[:h.IndexOffset], ErrTruncated},
		{"a CARv2 cut inside its header is truncated", v2[:30], ErrTruncated},
		{"a CARv2 whose data size cuts a block is truncated", withV2DataSize(v2, h.DataSize-1), ErrTruncated},
		{"a CARv2 whose inner header is CARv2 is malformed", withV2DataPayload(t, v2, v2[:car.PragmaSize]), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Check(bytes.NewReader(tt.data), CheckOptions{})
			assertInvalid(t, err, tt.kind, "")
		})
	}
}

func TestCheckReportsReadFailuresAsIOErrors(t *testing.T) {
	data := makeCAR(t, 6, 3<<20)
	boom := errors.New("connection reset")
	_, err := Check(&failingReader{data: data[:2<<20], err: boom}, CheckOptions{})
	if !errors.Is(err, boom) {
		t.Fatalf("err %v, want %v", err, boom)
	}
	if IsInvalid(err) {
		t.Fatalf("a read failure is reported as bad bytes: %v", err)
	}
}

// The scanner must give the same answer however the stream is split into
// writes: chunk boundaries fall anywhere in the wild.
func TestScannerIgnoresHowBytesAreSplit(t *testing.T) {
	v1 := makeCAR(t, 8, 64<<10)
	for name, data := range map[string][]byte{"v1": v1, "v2": wrapV2(t, v1, 3)} {
		rng := rand.New(rand.NewSource(8))
		for range 50 {
			s := newScanner()
			for rest := data; len(rest) > 0; {
				n := min(len(rest), 1+rng.Intn(100))
				if err := s.write(rest[:n]); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				rest = rest[n:]
			}
			if err := s.finish(); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if _, metas := sections(t, data); s.blocks != len(metas) {
				t.Fatalf("%s: %d blocks, want %d", name, s.blocks, len(metas))
			}
		}
	}
}

// The scanner must cost no allocation per block: CARs of small blocks
// have millions of them. (The hash libraries allocate per byte hashed —
// commp per 32 KiB slab, blake3 per write — which is theirs to answer for.)
func TestScannerDoesNotAllocatePerBlock(t *testing.T) {
	scan := func(data []byte) float64 {
		return testing.AllocsPerRun(5, func() {
			s := newScanner()
			if err := s.write(data); err != nil {
				t.Fatal(err)
			}
		})
	}
	few, many := sha256CAR(t, 10, 1000), sha256CAR(t, 1000, 1000)
	// One allocation per block would add 990; the race detector adds a few.
	if a, b := scan(few), scan(many); b-a > 50 {
		t.Fatalf("%.0f allocations for 10 blocks, %.0f for 1000", a, b)
	}
}

// sha256CAR is a CAR of n raw sha2-256 blocks of size bytes each.
func sha256CAR(t *testing.T, n, size int) []byte {
	t.Helper()
	rng := rand.New(rand.NewSource(int64(n)))
	blocks := make([]testBlock, n)
	for i := range blocks {
		data := make([]byte, size)
		rng.Read(data)
		c, _ := blockPrefixes[0].Sum(data)
		blocks[i] = testBlock{c, data}
	}
	return writeCARv1(t, []cid.Cid{blocks[0].c}, blocks)
}

func assertInvalid(t *testing.T, err error, kind error, reason string) {
	t.Helper()
	var inv *InvalidError
	if !errors.As(err, &inv) {
		t.Fatalf("err %v, want an InvalidError", err)
	}
	if !errors.Is(err, kind) || !errors.Is(err, ErrInvalid) || !IsInvalid(err) {
		t.Fatalf("err %v (kind %v), want kind %v", err, inv.Kind, kind)
	}
	if reason != "" && inv.Reason != reason {
		t.Fatalf("reason %q,\nwant   %q", inv.Reason, reason)
	}
}

// cutInsideVarint cuts data inside the first multi-byte section length.
func cutInsideVarint(t *testing.T, data []byte, metas []car.BlockMetadata) []byte {
	t.Helper()
	for _, m := range metas {
		if data[m.SourceOffset] >= 0x80 {
			return data[:m.SourceOffset+1]
		}
	}
	t.Fatal("no multi-byte section length")
	return nil
}

// withHeader replaces a CAR's header with one encoded from JSON via
// DAG-CBOR-compatible hand encoding of the few shapes tests need.
func withHeader(t *testing.T, data []byte, json string) []byte {
	t.Helper()
	hdr := map[string][]byte{
		`{"version":3,"roots":[]}`: {0xa2, 0x65, 'r', 'o', 'o', 't', 's', 0x80, 0x67, 'v', 'e', 'r', 's', 'i', 'o', 'n', 0x03},
		`{"version":1,"roots":[]}`: {0xa2, 0x65, 'r', 'o', 'o', 't', 's', 0x80, 0x67, 'v', 'e', 'r', 's', 'i', 'o', 'n', 0x01},
	}[json]
	l, n, _ := varint.FromUvarint(data)
	out := append(varint.ToUvarint(uint64(len(hdr))), hdr...)
	return append(out, data[n+int(l):]...)
}

// withSection appends a section holding the given CID bytes and no data.
func withSection(data []byte, cidBytes ...byte) []byte {
	out := append(bytes.Clone(data), varint.ToUvarint(uint64(len(cidBytes)))...)
	return append(out, cidBytes...)
}

// smallCAR is a valid CAR with no blocks, below commp's 65-byte minimum.
func smallCAR(t *testing.T) []byte {
	t.Helper()
	c, _ := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: multihash.IDENTITY, MhLength: -1}.Sum([]byte("x"))
	data := writeCARv1(t, []cid.Cid{c}, nil)
	if len(data) >= 65 {
		t.Fatalf("small CAR is %d bytes", len(data))
	}
	return data
}

// withV2DataSize rewrites a CARv2 header's data size.
func withV2DataSize(v2 []byte, size uint64) []byte {
	out := bytes.Clone(v2)
	at := car.PragmaSize + 16 + 8
	for i := range 8 {
		out[at+i] = byte(size >> (8 * i))
	}
	return out
}

// withV2DataPayload is a CARv2 header followed by the given payload.
func withV2DataPayload(t *testing.T, v2, payload []byte) []byte {
	t.Helper()
	out := withV2DataSize(v2[:car.PragmaSize+car.HeaderSize], uint64(len(payload)))
	for i := range 8 { // no index
		out[car.PragmaSize+32+i] = 0
	}
	return append(out, payload...)
}

var _ io.Reader = (*countingReader)(nil)

// Every way out of Check must end its goroutines and commp's: a piece
// worker runs Check for days.
func TestCheckLeavesNoGoroutineBehind(t *testing.T) {
	good := makeCAR(t, 15, 200<<10)
	bad := bytes.Clone(good)
	bad[len(bad)-1] ^= 1
	before := runtime.NumGoroutine()
	for _, data := range [][]byte{good, bad, good[:100], good[:40<<10], []byte("\x01"), good[:len(good)-1]} {
		for _, opts := range []CheckOptions{{}, {ExpectMD5: "00"}, {MaxSize: 50 << 10}} {
			Check(bytes.NewReader(data), opts)
		}
	}
	Check(&failingReader{data: good[:100<<10], err: errors.New("reset")}, CheckOptions{})
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if after := runtime.NumGoroutine(); after > before {
		t.Fatalf("%d goroutines before, %d after", before, after)
	}
}

func TestCheckRefusesMoreThanAPieceHolds(t *testing.T) {
	err := CheckOptions{}.checkSize(commp.MaxPiecePayload + 1)
	assertInvalid(t, err, ErrTooLarge, "size exceeds the 68182605824 bytes of payload a piece can hold")
	if got, want := (CheckOptions{}).readLimit(), uint64(commp.MaxPiecePayload)+1; got != want {
		t.Fatalf("read limit %d, want %d", got, want)
	}
}

// The hooks see what go-car reads: the header's roots, then every block
// with the offset of its data in the stream, in order; and the CAR CID is
// the sha2-256 of the bytes, computed here with crypto/sha256.
func TestCheckHooksSeeEveryBlockWhereGoCARFindsIt(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
	}{{"v1", makeCAR(t, 11, 3<<20)}, {"v2", wrapV2(t, makeCAR(t, 12, 1<<20), 100)}} {
		roots, metas := sections(t, tc.data)
		var gotRoots []cid.Cid
		var i int
		res, err := Check(bytes.NewReader(tc.data), CheckOptions{
			CARCID:  true,
			OnRoots: func(r []cid.Cid) error { gotRoots = r; return nil },
			OnBlock: func(c cid.Cid, off uint64, data []byte) error {
				m := metas[i]
				i++
				if !c.Equals(m.Cid) || off != dataOffset(m) || !bytes.Equal(data, tc.data[off:off+m.Size]) {
					t.Errorf("%s: block %d: %s at %d (%d bytes), go-car: %s at %d (%d bytes)", tc.name, i, c, off, len(data), m.Cid, dataOffset(m), m.Size)
				}
				return nil
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		if i != len(metas) || len(gotRoots) != len(roots) || !gotRoots[0].Equals(roots[0]) {
			t.Errorf("%s: %d blocks of %d, roots %v want %v", tc.name, i, len(metas), gotRoots, roots)
		}
		sum := sha256.Sum256(tc.data)
		mh, _ := multihash.Encode(sum[:], multihash.SHA2_256)
		if want := cid.NewCidV1(0x0202, mh); !res.CAR.Equals(want) {
			t.Errorf("%s: CAR CID %s, want %s", tc.name, res.CAR, want)
		}
	}
	// An error from a hook stops Check and is returned as is.
	stop := errors.New("stop")
	if _, err := Check(bytes.NewReader(makeCAR(t, 13, 1<<20)), CheckOptions{OnBlock: func(cid.Cid, uint64, []byte) error { return stop }}); err != stop {
		t.Errorf("hook error: got %v", err)
	}
}
