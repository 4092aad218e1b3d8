package carcheck

import (
	"bytes"
	"encoding/hex"
	"errors"
	"hash"

	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"
	mhcore "github.com/multiformats/go-multihash/core"
	"github.com/multiformats/go-varint"
)

// Limits on what the scanner gathers in memory. The header and section
// limits are go-car's defaults, so a CAR go-car reads we read too.
const (
	maxHeaderSize  = car.DefaultMaxAllowedHeaderSize
	maxSectionSize = car.DefaultMaxAllowedSectionSize
	// maxCIDSize bounds a section's CID; go-car's index refuses longer ones.
	maxCIDSize = car.DefaultMaxIndexCidSize
	// v2Prefix is the CARv2 pragma plus its fixed header.
	v2Prefix = car.PragmaSize + car.HeaderSize
)

type scanState int

const (
	stHeaderLen  scanState = iota // the length varint of a CARv1 header
	stHeader                      // the header's DAG-CBOR bytes
	stV2Header                    // the 40-byte CARv2 header after the pragma
	stSkip                        // padding before a CARv2 data payload
	stSectionLen                  // the length varint of a section
	stCID                         // the CID at the start of a section
	stData                        // a block's bytes
	stTail                        // after a CARv2 data payload: index, not checked
)

// scanner verifies a CAR as its bytes stream past, chunk by chunk, without
// holding a block in memory: small items (varints, a CID, the header) are
// gathered in acc across chunk boundaries, and block bytes go straight into
// the block's hasher. It is used by one goroutine.
//
// A CARv2 is checked by its inner CARv1 data payload; the index after it is
// derived data and is only required to be present, not parsed.
type scanner struct {
	state scanState
	off   uint64 // stream offset of the next byte
	acc   []byte // the small item being gathered
	want  uint64 // length of a fixed-size item being gathered
	item  uint64 // offset where the current item began

	secLen uint64 // length of the current section, after its varint
	remain uint64 // block bytes still to come
	blk    blockCheck

	blocks int
	roots  []cid.Cid

	v2       bool   // the outer header is the CARv2 pragma
	inner    bool   // inside the CARv2 data payload
	skip     uint64 // padding left before the data payload
	dataEnd  uint64 // where the data payload ends
	indexOff uint64 // where the CARv2 index starts; 0 for none

	hashers map[hashKey]hash.Hash
	sum     []byte

	// The hooks of CheckOptions; data gathers a block's bytes for
	// onBlock, starting at stream offset dataOff.
	onRoots func([]cid.Cid) error
	onBlock func(cid.Cid, uint64, []byte) error
	data    []byte
	dataOff uint64
}

type hashKey struct {
	code uint64
	size int
}

func newScanner() *scanner {
	return &scanner{
		acc:     make([]byte, 0, 256),
		hashers: make(map[hashKey]hash.Hash),
		sum:     make([]byte, 0, 128),
	}
}

// write scans the next bytes of the stream. After an error the scanner
// must not be used again.
func (s *scanner) write(p []byte) error {
	for len(p) > 0 {
		q := p
		if s.inner && uint64(len(q)) > s.dataEnd-s.off {
			q = q[:s.dataEnd-s.off]
		}
		n, err := s.step(q)
		s.off += uint64(n)
		p = p[n:]
		if err != nil {
			return err
		}
		if s.inner && s.off == s.dataEnd {
			if err := s.atEnd("the CARv2 data payload"); err != nil {
				return err
			}
			s.inner, s.state = false, stTail
		}
	}
	return nil
}

// finish is called at the end of the stream: it fails when the stream
// stopped inside an item.
func (s *scanner) finish() error {
	switch {
	case s.state == stTail:
		if s.indexOff != 0 && s.off <= s.indexOff {
			return invalid(ErrTruncated, "truncated CARv2: input ends at offset %d, before its index at offset %d", s.off, s.indexOff)
		}
		return nil
	case s.v2:
		if err := s.atEnd("input"); err != nil {
			return err
		}
		return invalid(ErrTruncated, "truncated CARv2: input ends at offset %d, inside its data payload that ends at offset %d", s.off, s.dataEnd)
	}
	return s.atEnd("input")
}

// step consumes at least one byte of q (never empty) in the current state.
func (s *scanner) step(q []byte) (int, error) {
	switch s.state {
	case stHeaderLen:
		return s.headerLen(q)
	case stHeader:
		return s.gather(q, s.header)
	case stV2Header:
		return s.gather(q, s.v2Header)
	case stSkip:
		n := min(uint64(len(q)), s.skip)
		if s.skip -= n; s.skip == 0 {
			s.enterPayload()
		}
		return int(n), nil
	case stSectionLen:
		return s.sectionLen(q)
	case stCID:
		return s.cid(q)
	case stData:
		n := min(uint64(len(q)), s.remain)
		s.blk.write(q[:n])
		if s.onBlock != nil {
			s.data = append(s.data, q[:n]...)
		}
		if s.remain -= n; s.remain == 0 {
			return int(n), s.endBlock()
		}
		return int(n), nil
	}
	return len(q), nil // stTail
}

// varint gathers a varint, one byte at a time: it is read once per section.
func (s *scanner) varint(q []byte, what string) (n int, v uint64, done bool, err error) {
	if len(s.acc) == 0 {
		s.item = s.off
	}
	for n < len(q) {
		b := q[n]
		n++
		s.acc = append(s.acc, b)
		if b < 0x80 || len(s.acc) == varint.MaxLenUvarint63 {
			v, _, err := varint.FromUvarint(s.acc)
			s.acc = s.acc[:0]
			if err != nil {
				return n, 0, false, invalid(ErrMalformed, "%s at offset %d: %v", what, s.item, err)
			}
			return n, v, true, nil
		}
	}
	return n, 0, false, nil
}

// gather collects s.want bytes into acc, then calls done.
func (s *scanner) gather(q []byte, done func() error) (int, error) {
	n := min(uint64(len(q)), s.want-uint64(len(s.acc)))
	s.acc = append(s.acc, q[:n]...)
	if uint64(len(s.acc)) == s.want {
		return int(n), done()
	}
	return int(n), nil
}

func (s *scanner) headerLen(q []byte) (int, error) {
	n, v, done, err := s.varint(q, "header length")
	if !done {
		return n, err
	}
	if v == 0 || v > maxHeaderSize {
		return n, invalid(ErrMalformed, "header at offset %d: length %d is outside 1…%d", s.item, v, maxHeaderSize)
	}
	s.want, s.state = v, stHeader
	return n, nil
}

// header decodes a gathered header with go-car, so that what counts as a
// valid header is go-car's rule, not a second one of ours.
func (s *scanner) header() error {
	section := append(varint.ToUvarint(uint64(len(s.acc))), s.acc...)
	s.acc = s.acc[:0]
	// go-car's decoding errors may quote the header's values, which are
	// whatever the source sent: the reason says only that it failed.
	version, err := car.ReadVersion(bytes.NewReader(section))
	if err != nil {
		return invalid(ErrMalformed, "header at offset %d: not a CAR header", s.item)
	}
	switch {
	case version == 2 && !s.v2 && s.item == 0:
		if !bytes.Equal(section, car.Pragma) {
			return invalid(ErrMalformed, "header at offset 0: not the CARv2 pragma")
		}
		s.v2, s.want, s.state = true, car.HeaderSize, stV2Header
		return nil
	case version != 1:
		return invalid(ErrMalformed, "header at offset %d: unsupported CAR version %d", s.item, version)
	}
	br, err := car.NewBlockReader(bytes.NewReader(section))
	if err != nil {
		return invalid(ErrMalformed, "header at offset %d: not a valid CARv1 header", s.item)
	}
	s.roots, s.state = br.Roots, stSectionLen
	if s.onRoots != nil {
		return s.onRoots(s.roots)
	}
	return nil
}

// v2Header reads the CARv2 header: where the inner CARv1 lies and where
// the index starts.
func (s *scanner) v2Header() error {
	var h car.Header
	if _, err := h.ReadFrom(bytes.NewReader(s.acc)); err != nil {
		return invalid(ErrMalformed, "CARv2 header at offset %d: %v", car.PragmaSize, err)
	}
	s.acc = s.acc[:0]
	end := h.DataOffset + h.DataSize
	if end < h.DataOffset || (h.IndexOffset != 0 && h.IndexOffset < end) {
		return invalid(ErrMalformed, "CARv2 header: data payload at %d of %d bytes overlaps index at %d", h.DataOffset, h.DataSize, h.IndexOffset)
	}
	s.dataEnd, s.indexOff = end, h.IndexOffset
	s.skip = h.DataOffset - v2Prefix
	if s.skip == 0 {
		s.enterPayload()
	} else {
		s.state = stSkip
	}
	return nil
}

func (s *scanner) enterPayload() { s.inner, s.state = true, stHeaderLen }

func (s *scanner) sectionLen(q []byte) (int, error) {
	n, v, done, err := s.varint(q, "section length")
	if !done {
		return n, err
	}
	if v == 0 {
		return n, invalid(ErrMalformed, "section at offset %d: zero length", s.item)
	}
	if v > maxSectionSize {
		return n, invalid(ErrMalformed, "section at offset %d: length %d exceeds the %d-byte limit", s.item, v, maxSectionSize)
	}
	s.secLen, s.state = v, stCID
	return n, nil
}

// cid gathers the section's CID; its length is known once its varints are.
func (s *scanner) cid(q []byte) (int, error) {
	n := 0
	for {
		need, info, err := cidLength(s.acc)
		switch {
		case err != nil:
			return n, invalid(ErrMalformed, "section at offset %d: CID: %v", s.item, err)
		case uint64(need) > s.secLen:
			return n, invalid(ErrMalformed, "section at offset %d: CID is longer than the %d-byte section", s.item, s.secLen)
		case need == len(s.acc):
			return n, s.startBlock(info)
		case n == len(q):
			return n, nil
		}
		take := min(need-len(s.acc), len(q)-n)
		s.acc = append(s.acc, q[n:n+take]...)
		n += take
	}
}

func (s *scanner) startBlock(info cidInfo) error {
	s.remain, s.state = s.secLen-uint64(len(s.acc)), stData
	digest := s.acc[info.digestAt:]
	var h hash.Hash
	if info.code != mhcore.IDENTITY {
		var err error
		if h, err = s.hasher(info.code, len(digest)); err != nil {
			return invalid(ErrUnsupportedHash, "block %d (%s) at offset %d: multihash 0x%x: %v", s.blocks+1, s.cidString(), s.item, info.code, err)
		}
	}
	s.blk = blockCheck{h: h, digest: digest}
	if s.onBlock != nil {
		s.data = s.data[:0]
		s.dataOff = s.item + uint64(varint.UvarintSize(s.secLen)) + uint64(len(s.acc))
	}
	if s.remain == 0 {
		return s.endBlock()
	}
	return nil
}

// hasher returns a reset hasher for a multihash, reusing one per kind so
// that blocks cost no allocation.
func (s *scanner) hasher(code uint64, size int) (hash.Hash, error) {
	k := hashKey{code, size}
	if h, ok := s.hashers[k]; ok {
		h.Reset()
		return h, nil
	}
	h, err := mhcore.GetVariableHasher(code, size)
	if err != nil {
		return nil, err
	}
	s.hashers[k] = h
	return h, nil
}

func (s *scanner) endBlock() error {
	if !s.blk.ok(&s.sum) {
		return invalid(ErrBlockMismatch, "block %d (%s) at offset %d: bytes do not match CID", s.blocks+1, s.cidString(), s.item)
	}
	s.blocks++
	if s.onBlock != nil {
		c, err := cid.Cast(s.acc)
		if err != nil {
			return invalid(ErrMalformed, "block %d at offset %d: CID: %v", s.blocks, s.item, err)
		}
		if err := s.onBlock(c, s.dataOff, s.data); err != nil {
			return err
		}
	}
	s.acc, s.state = s.acc[:0], stSectionLen
	return nil
}

// cidString renders the gathered CID for a reason; only called on errors.
func (s *scanner) cidString() string {
	c, err := cid.Cast(s.acc)
	if err != nil {
		return "cid " + hex.EncodeToString(s.acc)
	}
	return c.String()
}

// atEnd fails when the CAR (or a CARv2's data payload, per end) ends
// inside an item rather than between sections.
func (s *scanner) atEnd(end string) error {
	switch s.state {
	case stSectionLen:
		if len(s.acc) == 0 {
			return nil
		}
		return invalid(ErrTruncated, "truncated section at offset %d: %s ends inside its length", s.item, end)
	case stHeaderLen, stHeader:
		if s.off == 0 {
			return invalid(ErrTruncated, "empty input: no CAR header")
		}
		return invalid(ErrTruncated, "truncated header at offset %d: %s ends inside it", s.item, end)
	case stV2Header, stSkip:
		return invalid(ErrTruncated, "truncated CARv2: %s ends at offset %d, before its data payload", end, s.off)
	case stCID:
		return invalid(ErrTruncated, "truncated section at offset %d: %s ends inside its CID", s.item, end)
	case stData:
		got := s.secLen - uint64(len(s.acc)) - s.remain
		return invalid(ErrTruncated, "truncated block %d (%s) at offset %d: %s ends after %d of its %d bytes",
			s.blocks+1, s.cidString(), s.item, end, got, got+s.remain)
	}
	return nil
}

// blockCheck hashes one block's bytes as they arrive and compares the
// result with the CID's digest. An identity multihash is compared byte by
// byte instead: its digest is the block.
type blockCheck struct {
	h      hash.Hash // nil for identity
	digest []byte
	pos    int  // identity: bytes compared so far
	bad    bool // identity: a byte differed or the block is too long
}

func (b *blockCheck) write(p []byte) {
	if b.h != nil {
		b.h.Write(p)
		return
	}
	if b.bad || b.pos+len(p) > len(b.digest) || !bytes.Equal(b.digest[b.pos:b.pos+len(p)], p) {
		b.bad = true
		return
	}
	b.pos += len(p)
}

func (b *blockCheck) ok(scratch *[]byte) bool {
	if b.h == nil {
		return !b.bad && b.pos == len(b.digest)
	}
	*scratch = b.h.Sum((*scratch)[:0])
	sum := *scratch
	return len(sum) >= len(b.digest) && bytes.Equal(sum[:len(b.digest)], b.digest)
}

// cidInfo is what a block check needs from its CID.
type cidInfo struct {
	code     uint64 // multihash code
	digestAt int    // offset of the digest in the CID bytes
}

var errCIDVersion = errors.New("CID version is not 0 or 1")

// cidLength parses the CID that b begins without allocating. It returns
// the CID's total length once b is long enough to tell, and len(b)+1 while
// b ends inside one of its varints.
func cidLength(b []byte) (int, cidInfo, error) {
	if len(b) > 0 && b[0] == 0x12 { // CIDv0: a bare sha2-256 multihash
		if len(b) < 2 {
			return 2, cidInfo{}, nil
		}
		if b[1] != 0x20 {
			return 0, cidInfo{}, errors.New("CIDv0 digest is not 32 bytes")
		}
		return 34, cidInfo{code: mhcore.SHA2_256, digestAt: 2}, nil
	}
	var v [4]uint64 // version, codec, multihash code, digest length
	pos := 0
	for i := range v {
		x, n, err := varint.FromUvarint(b[pos:])
		if errors.Is(err, varint.ErrUnderflow) {
			return len(b) + 1, cidInfo{}, nil
		}
		if err != nil {
			return 0, cidInfo{}, err
		}
		if i == 0 && x != 1 {
			return 0, cidInfo{}, errCIDVersion
		}
		v[i], pos = x, pos+n
	}
	if v[3] > maxCIDSize {
		return 0, cidInfo{}, errors.New("digest too long")
	}
	return pos + int(v[3]), cidInfo{code: v[2], digestAt: pos}, nil
}
