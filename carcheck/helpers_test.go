package carcheck

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand"
	"testing"

	"github.com/ferry-dev/ferry/piece"
	"github.com/filecoin-project/go-data-segment/fr32"
	"github.com/filecoin-project/go-data-segment/merkletree"
	commp "github.com/filecoin-project/go-fil-commp-hashhash"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"
	"github.com/ipld/go-car/v2/storage"
	"github.com/multiformats/go-multihash"
	"github.com/multiformats/go-varint"
)

type testBlock struct {
	c    cid.Cid
	data []byte
}

// blockPrefixes are the CID kinds random CARs cycle through, so that every
// supported multihash is exercised.
var blockPrefixes = []cid.Prefix{
	{Version: 1, Codec: cid.Raw, MhType: multihash.SHA2_256, MhLength: -1},
	{Version: 0, Codec: cid.DagProtobuf, MhType: multihash.SHA2_256, MhLength: -1},
	{Version: 1, Codec: cid.DagCBOR, MhType: multihash.BLAKE2B_MIN + 31, MhLength: -1},
	{Version: 1, Codec: cid.Raw, MhType: multihash.BLAKE3, MhLength: 32},
	{Version: 1, Codec: cid.Raw, MhType: multihash.SHA2_256, MhLength: 20}, // truncated digest
}

// randomBlocks makes blocks of random bytes, seeded, whose sections add up
// to about size bytes. The first block is a small identity-hashed one.
func randomBlocks(tb testing.TB, seed int64, size int) []testBlock {
	tb.Helper()
	rng := rand.New(rand.NewSource(seed))
	data := []byte("identity block")
	id, _ := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: multihash.IDENTITY, MhLength: -1}.Sum(data)
	blocks := []testBlock{{id, data}}
	for total := 0; total < size; {
		n := 1 + rng.Intn(min(256<<10, size-total+1))
		data := make([]byte, n)
		rng.Read(data)
		c, err := blockPrefixes[len(blocks)%len(blockPrefixes)].Sum(data)
		if err != nil {
			tb.Fatal(err)
		}
		blocks = append(blocks, testBlock{c, data})
		total += n + 40
	}
	return blocks
}

// writeCARv1 writes blocks as a CARv1 with go-car.
func writeCARv1(tb testing.TB, roots []cid.Cid, blocks []testBlock) []byte {
	tb.Helper()
	var buf bytes.Buffer
	w, err := storage.NewWritable(&buf, roots, car.WriteAsCarV1(true), car.StoreIdentityCIDs(true))
	if err != nil {
		tb.Fatal(err)
	}
	for _, b := range blocks {
		if err := w.Put(context.Background(), b.c.KeyString(), b.data); err != nil {
			tb.Fatal(err)
		}
	}
	if err := w.Finalize(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// makeCAR is a seeded random CARv1 of about size bytes, rooted at its
// second block.
func makeCAR(tb testing.TB, seed int64, size int) []byte {
	tb.Helper()
	blocks := randomBlocks(tb, seed, size)
	return writeCARv1(tb, []cid.Cid{blocks[len(blocks)/2].c}, blocks)
}

// wrapV2 wraps a CARv1 as a CARv2 with an index, with padding bytes
// between the CARv2 header and the data payload.
func wrapV2(tb testing.TB, v1 []byte, padding uint64) []byte {
	tb.Helper()
	var out bytes.Buffer
	if err := car.WrapV1(bytes.NewReader(v1), &out, car.UseDataPadding(padding)); err != nil {
		tb.Fatal(err)
	}
	return out.Bytes()
}

// sections lists a CAR's sections with go-car, the independent parser.
func sections(tb testing.TB, data []byte) (roots []cid.Cid, metas []car.BlockMetadata) {
	tb.Helper()
	br, err := car.NewBlockReader(bytes.NewReader(data))
	if err != nil {
		tb.Fatal(err)
	}
	for {
		m, err := br.SkipNext()
		if errors.Is(err, io.EOF) {
			return br.Roots, metas
		}
		if err != nil {
			tb.Fatal(err)
		}
		metas = append(metas, *m)
	}
}

// dataOffset is where a section's block bytes start.
func dataOffset(m car.BlockMetadata) uint64 {
	n := uint64(m.ByteLen()) + m.Size
	return m.SourceOffset + uint64(varint.UvarintSize(n)) + uint64(m.ByteLen())
}

// commpOf is go-fil-commp-hashhash fed the bytes directly.
func commpOf(tb testing.TB, data []byte) piece.Commitment {
	tb.Helper()
	var cp commp.Calc
	cp.Write(data)
	root, padded, err := cp.Digest()
	if err != nil {
		tb.Fatal(err)
	}
	c := piece.Commitment{Padded: padded, Payload: uint64(len(data))}
	copy(c.Root[:], root)
	return c
}

// segmentRoot is the piece root by go-data-segment's own code: fr32
// padding and its merkle tree, sharing nothing with go-fil-commp-hashhash.
func segmentRoot(tb testing.TB, data []byte) [32]byte {
	tb.Helper()
	padded := piece.PaddedSize(uint64(len(data)))
	in := make([]byte, piece.Unpadded(padded))
	copy(in, data)
	out := make([]byte, padded)
	fr32.Pad(in, out)
	leaves := make([]merkletree.Node, padded/32)
	for i := range leaves {
		copy(leaves[i][:], out[i*32:])
	}
	return *merkletree.GrowTreeHashedLeafs(leaves).Root()
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// failingReader returns its data, then err.
type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

// mustCheck runs Check and fails the test on an error.
func mustCheck(tb testing.TB, data []byte, opts CheckOptions) *Result {
	tb.Helper()
	res, err := Check(bytes.NewReader(data), opts)
	if err != nil {
		tb.Fatalf("Check: %v", err)
	}
	return res
}
