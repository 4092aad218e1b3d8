package carcheck

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ferry-dev/ferry/piece"
	commp "github.com/filecoin-project/go-fil-commp-hashhash"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// CARCodec is the multicodec of a CAR's CID ("car", 0x0202): the CID of
// a CAR file's bytes.
const CARCodec = 0x0202

// CheckOptions are the expectations Check holds the bytes to. Zero values
// expect nothing.
type CheckOptions struct {
	// MaxSize rejects inputs longer than this (ErrTooLarge); Check reads at
	// most MaxSize+1 bytes. Zero means no limit.
	MaxSize uint64
	// ExpectSize rejects inputs of another size (ErrSizeMismatch); Check
	// reads at most ExpectSize+1 bytes. Zero means any size.
	ExpectSize uint64
	// ExpectMD5 (hex, any case) rejects inputs with another md5
	// (ErrMD5Mismatch). Empty means any md5.
	ExpectMD5 string
	// CARCID asks for Result.CAR, the sha2-256 of the whole stream.
	CARCID bool
	// OnRoots, when set, is called with the (inner, for a CARv2) header's
	// roots as soon as the header is read.
	OnRoots func(roots []cid.Cid) error
	// OnBlock, when set, is called with each block once its bytes have
	// hashed to its CID, in stream order: its CID, the stream offset of
	// its first data byte, and its bytes, which are valid only during the
	// call (Check reuses the buffer; it holds one block at a time). An
	// error from OnRoots or OnBlock stops Check, which returns it as is.
	OnBlock func(c cid.Cid, offset uint64, data []byte) error
}

// Result is what one pass over a CAR learns.
type Result struct {
	// Commitment is the CAR's piece; its Payload is Size.
	Commitment piece.Commitment
	Size       uint64
	// MD5 is the lowercase hex md5 of the bytes.
	MD5 string
	// Roots are the CAR header's roots (the inner header's, for a CARv2).
	Roots []cid.Cid
	// Blocks is the number of blocks, each verified against its CID.
	Blocks int
	// CAR is the CID of the bytes (sha2-256, codec car) when
	// CheckOptions.CARCID asked for it; cid.Undef otherwise.
	CAR cid.Cid
}

// Check reads r to its end once and returns the piece commitment, size,
// md5, roots and block count of the CAR it holds, having verified every
// block against its CID.
//
// Bad bytes (a broken CAR, or a size or md5 other than expected) give an
// *InvalidError (errors.Is(err, ErrInvalid)); a failure to read r is
// returned wrapped, never as an InvalidError. Check stops reading at the
// first bad block. It does not close r.
func Check(r io.Reader, opts CheckOptions) (*Result, error) {
	r = io.LimitReader(r, int64(opts.readLimit()))
	p := startPipeline(opts.CARCID)
	s := newScanner()
	s.onRoots, s.onBlock = opts.OnRoots, opts.OnBlock
	size, err := p.run(r, s)
	if err == nil {
		// The size first: a short download explains a truncated CAR.
		err = opts.checkSize(size)
	}
	if err == nil {
		err = s.finish()
	}
	if err == nil && size < commp.MinPiecePayload {
		err = invalid(ErrTooSmall, "size %d is below the %d bytes a piece needs", size, commp.MinPiecePayload)
	}
	if err != nil {
		p.abort()
		return nil, err
	}
	return result(p, s, size, opts)
}

// readLimit is how many bytes are enough to decide: one past the smallest
// limit, so that "too long" is seen without reading on.
func (o CheckOptions) readLimit() uint64 {
	limit := uint64(commp.MaxPiecePayload)
	if o.MaxSize > 0 {
		limit = min(limit, o.MaxSize)
	}
	if o.ExpectSize > 0 {
		limit = min(limit, o.ExpectSize)
	}
	return limit + 1
}

func (o CheckOptions) checkSize(size uint64) error {
	switch {
	case o.MaxSize > 0 && size > o.MaxSize:
		return invalid(ErrTooLarge, "size exceeds the limit of %d bytes", o.MaxSize)
	case size > commp.MaxPiecePayload:
		return invalid(ErrTooLarge, "size exceeds the %d bytes of payload a piece can hold", uint64(commp.MaxPiecePayload))
	case o.ExpectSize > 0 && size > o.ExpectSize:
		return invalid(ErrSizeMismatch, "size exceeds the expected %d bytes", o.ExpectSize)
	case o.ExpectSize > 0 && size != o.ExpectSize:
		return invalid(ErrSizeMismatch, "size %d does not match expected %d", size, o.ExpectSize)
	}
	return nil
}

// result collects the digests once the whole input has passed.
func result(p *pipeline, s *scanner, size uint64, opts CheckOptions) (*Result, error) {
	sum, carSum, root, padded, err := p.finish()
	if err != nil {
		return nil, fmt.Errorf("commp: %w", err)
	}
	if padded != piece.PaddedSize(size) {
		// Both compute the same FRC-0058 rule; a difference is a bug.
		return nil, fmt.Errorf("commp: padded size %d for %d bytes, want %d", padded, size, piece.PaddedSize(size))
	}
	md5hex := hex.EncodeToString(sum)
	if opts.ExpectMD5 != "" && !strings.EqualFold(opts.ExpectMD5, md5hex) {
		return nil, invalid(ErrMD5Mismatch, "md5 %s does not match expected %s", md5hex, opts.ExpectMD5)
	}
	res := &Result{Size: size, MD5: md5hex, Roots: s.roots, Blocks: s.blocks}
	if carSum != nil {
		mh, err := multihash.Encode(carSum, multihash.SHA2_256)
		if err != nil {
			return nil, err
		}
		res.CAR = cid.NewCidV1(CARCodec, mh)
	}
	res.Commitment = piece.Commitment{Padded: padded, Payload: size}
	copy(res.Commitment.Root[:], root)
	return res, nil
}

// The pipeline: Check's goroutine reads a chunk, hands it to the md5 and
// commP goroutines, and scans it itself while they hash. All three only
// read a chunk; the last to finish with it returns it to the free list,
// and only then is it overwritten. commP (itself a tower of goroutines) is
// the bottleneck, so the parse and md5 run beside it on the other core.
const (
	// chunkSize is a multiple of commp's internal 256×127-byte buffer, so
	// that commp.Calc.Write hashes a chunk in place instead of copying it.
	chunkSize = 32 * 256 * 127
	// chunks bounds the memory of one Check to about 8 MiB, enough to keep
	// the hashers busy while the reader waits on the network.
	chunks = 8
)

type chunk struct {
	buf  []byte
	n    int
	refs atomic.Int32 // readers still using buf
}

// chunkPool keeps chunks across Checks: a piece worker checks CAR after CAR.
var chunkPool = sync.Pool{New: func() any { return &chunk{buf: make([]byte, chunkSize)} }}

type pipeline struct {
	free    chan *chunk
	made    int // chunks allocated so far; grown lazily for small inputs
	md5in   chan *chunk
	commpIn chan *chunk
	done    chan struct{}
	md5     hash.Hash
	sha     hash.Hash // the CAR CID's hash; nil when not asked for
	cp      commp.Calc
	cpN     uint64 // bytes written to cp
	cpErr   error
	// dropping tells the hashers to skip the chunks still queued: the
	// result is already decided.
	dropping atomic.Bool
	finished bool
}

func startPipeline(carCID bool) *pipeline {
	p := &pipeline{
		free:    make(chan *chunk, chunks),
		md5in:   make(chan *chunk, chunks),
		commpIn: make(chan *chunk, chunks),
		done:    make(chan struct{}, 2),
		md5:     md5.New(),
	}
	if carCID {
		p.sha = sha256.New()
	}
	go p.hashMD5()
	go p.hashCommP()
	return p
}

func (p *pipeline) hashMD5() {
	for c := range p.md5in {
		if !p.dropping.Load() {
			p.md5.Write(c.buf[:c.n])
			if p.sha != nil {
				p.sha.Write(c.buf[:c.n])
			}
		}
		p.release(c)
	}
	p.done <- struct{}{}
}

func (p *pipeline) hashCommP() {
	for c := range p.commpIn {
		if p.cpErr == nil && !p.dropping.Load() {
			var n int
			n, p.cpErr = p.cp.Write(c.buf[:c.n])
			p.cpN += uint64(n)
		}
		p.release(c)
	}
	p.done <- struct{}{}
}

// release drops one reader's hold on c; the last one frees it.
func (p *pipeline) release(c *chunk) {
	if c.refs.Add(-1) == 0 {
		p.free <- c // never blocks: free has room for every chunk
	}
}

// next returns a chunk nobody reads any more, allocating while under the
// bound rather than waiting, so small inputs allocate one chunk.
func (p *pipeline) next() *chunk {
	select {
	case c := <-p.free:
		return c
	default:
	}
	if p.made < chunks {
		p.made++
		return chunkPool.Get().(*chunk)
	}
	return <-p.free
}

// run streams r through the scanner and both hashers and returns the size.
// It returns at the first read or scan error.
func (p *pipeline) run(r io.Reader, s *scanner) (uint64, error) {
	var size uint64
	for {
		c := p.next()
		n, rerr := io.ReadFull(r, c.buf)
		if n == 0 {
			p.free <- c
		} else {
			c.n = n
			c.refs.Store(3)
			p.md5in <- c
			p.commpIn <- c
			size += uint64(n)
			err := s.write(c.buf[:n])
			p.release(c)
			if err != nil {
				return size, err
			}
		}
		switch {
		case rerr == io.EOF || errors.Is(rerr, io.ErrUnexpectedEOF):
			return size, nil
		case rerr != nil:
			return size, fmt.Errorf("read at offset %d: %w", size, rerr)
		}
	}
}

// stop ends both hashing goroutines and waits for them, after which every
// chunk is back on the free list and returned to the buffer pool.
func (p *pipeline) stop() {
	if p.finished {
		return
	}
	p.finished = true
	close(p.md5in)
	close(p.commpIn)
	<-p.done
	<-p.done
	for range p.made {
		chunkPool.Put(<-p.free)
	}
}

// abort stops the pipeline and discards the commP. It ends commp's
// goroutines with Digest, not Reset: in go-fil-commp-hashhash v0.2.0 Reset
// panics when less than one 32 KiB slab was written, while Digest is
// sound for any input of at least MinPiecePayload bytes.
func (p *pipeline) abort() {
	p.dropping.Store(true)
	p.stop()
	if p.cpN == 0 {
		return
	}
	if p.cpN < commp.MinPiecePayload {
		p.cp.Write(make([]byte, commp.MinPiecePayload-p.cpN))
	}
	p.cp.Digest()
}

// finish stops the pipeline and returns the md5, the sha2-256 (nil when
// not asked for) and the commP root and padded size.
func (p *pipeline) finish() (md5sum, shaSum, root []byte, padded uint64, err error) {
	if p.stop(); p.cpErr != nil {
		p.abort()
		return nil, nil, nil, 0, p.cpErr
	}
	root, padded, err = p.cp.Digest()
	if p.sha != nil {
		shaSum = p.sha.Sum(nil)
	}
	return p.md5.Sum(nil), shaSum, root, padded, err
}
