package testutil

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/piece"
	commp "github.com/filecoin-project/go-fil-commp-hashhash"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"
	"github.com/ipld/go-car/v2/storage"
	"github.com/multiformats/go-multihash"
)

// CAR is a real CARv1 file made with go-car, with its facts computed
// independently of ferry: the CAR CID from sha256, md5, and the piece
// commitment from go-fil-commp-hashhash.
type CAR struct {
	Bytes []byte
	CID   cid.Cid
	MD5   string
	Piece piece.Commitment
}

// MakeCAR makes a CARv1 of raw blocks of seeded random bytes, about size
// bytes long.
func MakeCAR(tb testing.TB, seed uint64, size int) CAR {
	tb.Helper()
	c, err := NewCAR(seed, size)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// NewCAR is MakeCAR outside a test.
func NewCAR(seed uint64, size int) (CAR, error) {
	r := rand.New(rand.NewPCG(seed, 42))
	var blocks [][]byte
	for total := 0; total < size; {
		n := 1 + r.IntN(min(64<<10, max(size-total, 1)))
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		blocks = append(blocks, b)
		total += n + 40
	}
	cids := make([]cid.Cid, len(blocks))
	for i, b := range blocks {
		c, err := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: multihash.SHA2_256, MhLength: -1}.Sum(b)
		if err != nil {
			return CAR{}, err
		}
		cids[i] = c
	}
	var buf bytes.Buffer
	w, err := storage.NewWritable(&buf, cids[:1], car.WriteAsCarV1(true))
	if err != nil {
		return CAR{}, err
	}
	for i, b := range blocks {
		if err := w.Put(context.Background(), cids[i].KeyString(), b); err != nil {
			return CAR{}, err
		}
	}
	if err := w.Finalize(); err != nil {
		return CAR{}, err
	}
	return describe(buf.Bytes())
}

// DescribeCAR computes the facts of the CAR data as describe does: for
// CARs ferry made (fetched pins), checked against ferry's own figures.
func DescribeCAR(data []byte) (CAR, error) { return describe(data) }

// describe computes a CAR's facts with go-car-independent tools: sha256
// for the CAR CID, md5, and go-fil-commp-hashhash for the piece.
func describe(data []byte) (CAR, error) {
	mh, _ := multihash.Sum(data, multihash.SHA2_256, -1)
	sum := md5.Sum(data)
	cp := &commp.Calc{}
	cp.Write(data)
	digest, padded, err := cp.Digest()
	if err != nil {
		return CAR{}, err
	}
	c := CAR{Bytes: data, CID: cid.NewCidV1(CodecCAR, mh), MD5: hex.EncodeToString(sum[:])}
	copy(c.Piece.Root[:], digest)
	c.Piece.Padded, c.Piece.Payload = padded, uint64(len(data))
	return c, nil
}

// Event is the car.replicated of the CAR served under base; withPiece adds
// its piece CID v2.
func (c CAR) Event(base string, withPiece bool) *events.CarReplicated {
	e := &events.CarReplicated{Car: c.CID.String(), Size: uint64(len(c.Bytes)), MD5: c.MD5,
		URLs: []string{base + "/" + c.CID.String() + ".car"}, ReplicatedAt: "2026-11-22T12:00:00Z"}
	if withPiece {
		e.Piece = c.Piece.MustV2().String()
	}
	return e
}

// WriteTo stores the CAR as <dir>/<cid>.car.
func (c CAR) WriteTo(tb testing.TB, dir string) string {
	tb.Helper()
	p, err := c.WriteFile(dir)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// WriteFile stores the CAR as <dir>/<cid>.car and returns the path.
func (c CAR) WriteFile(dir string) (string, error) {
	p := filepath.Join(dir, c.CID.String()+".car")
	return p, os.WriteFile(p, c.Bytes, 0o644)
}

// PackOutput reads what a pack put in out: every <car cid>.car and
// manifest.json, by name, to compare two packs byte for byte.
func PackOutput(tb testing.TB, out string) map[string][]byte {
	tb.Helper()
	names, err := filepath.Glob(filepath.Join(out, "*.car"))
	if err != nil {
		tb.Fatal(err)
	}
	m := map[string][]byte{}
	for _, n := range append(names, filepath.Join(out, "manifest.json")) {
		b, err := os.ReadFile(n)
		if err != nil {
			tb.Fatal(err)
		}
		m[filepath.Base(n)] = b
	}
	return m
}
