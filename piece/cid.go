package piece

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"

	"github.com/ferry-dev/ferry/internal/cidtext"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"github.com/multiformats/go-varint"
)

// Multicodec codes of the two piece CID forms.
const (
	// CodecUnsealed is fil-commitment-unsealed, the codec of a v1 piece CID.
	CodecUnsealed = 0xf101
	// HashTrunc254 is sha2-256-trunc254-padded, the multihash of a v1 piece CID.
	HashTrunc254 = 0x1012
	// HashTree is fr32-sha2-256-trunc254-padded-binary-tree, the multihash of
	// a v2 piece CID (FRC-0069).
	HashTree = 0x1011
	// CodecRaw is the codec of a v2 piece CID.
	CodecRaw = 0x55
)

// MinPaddedSize is the smallest padded piece: one fr32 quad of 4 nodes.
const MinPaddedSize = 128

// Errors returned by Parse and the size functions.
var (
	ErrNotPiece   = errors.New("not a piece CID")
	ErrSizeNeeded = errors.New("a v1 piece CID needs its padded size")
	ErrBadSize    = errors.New("invalid piece size")
)

// Commitment is a piece: its 32-byte root, its padded size and, when known,
// the payload size it was computed from. It converts to both CID forms.
type Commitment struct {
	Root [32]byte
	// Padded is the padded piece size, a power of two ≥ 128.
	Padded uint64
	// Payload is the unpadded payload size; 0 when unknown (a v1 CID).
	Payload uint64
}

// PaddedSize is the padded size of the piece of a payload of n bytes:
// nextPow2(ceil(n*128/127)), at least 128.
// Payloads beyond the largest piece saturate at 1<<63, which no deal holds.
func PaddedSize(n uint64) uint64 {
	if n > Unpadded(1<<63) {
		return 1 << 63
	}
	p := (n + 126) / 127 * 128
	if p <= MinPaddedSize {
		return MinPaddedSize
	}
	return 1 << bits.Len64(p-1)
}

// Unpadded is the payload capacity of a padded size.
func Unpadded(padded uint64) uint64 { return padded - padded/128 }

// ValidPadded reports whether p is a valid padded piece size.
func ValidPadded(p uint64) bool { return p >= MinPaddedSize && p&(p-1) == 0 }

// V1 is the piece CID v1 (fil-commitment-unsealed, sha2-256-trunc254-padded).
func (c Commitment) V1() cid.Cid {
	mh, _ := multihash.Encode(c.Root[:], HashTrunc254)
	return cid.NewCidV1(CodecUnsealed, mh)
}

// V2 is the FRC-0069 piece CID v2, which carries the payload size. It needs
// a known payload.
func (c Commitment) V2() (cid.Cid, error) {
	var buf [v2DigestMax]byte
	digest, err := c.v2Digest(&buf)
	if err != nil {
		return cid.Undef, err
	}
	mh, err := multihash.Encode(digest, HashTree)
	if err != nil {
		return cid.Undef, err
	}
	return cid.NewCidV1(CodecRaw, mh), nil
}

// V2Text is V2's text (what its String prints), made without go-cid's
// allocations: the fold prints one for every CAR it takes in.
func (c Commitment) V2Text() (string, error) {
	var buf [v2DigestMax]byte
	digest, err := c.v2Digest(&buf)
	if err != nil {
		return "", err
	}
	var text [2 * v2DigestMax]byte
	return string(cidtext.Append(text[:0], CodecRaw, HashTree, digest)), nil
}

// v2DigestMax bounds a v2 multihash digest: padding, height, root.
const v2DigestMax = binary.MaxVarintLen64 + 1 + 32

// v2Digest is the multihash digest of the v2 CID, in buf.
func (c Commitment) v2Digest(buf *[v2DigestMax]byte) ([]byte, error) {
	if !ValidPadded(c.Padded) || c.Payload == 0 || c.Payload > Unpadded(c.Padded) {
		return nil, fmt.Errorf("piece v2: payload %d in padded %d: %w", c.Payload, c.Padded, ErrBadSize)
	}
	padding := Unpadded(c.Padded) - c.Payload
	digest := binary.AppendUvarint(buf[:0], padding)
	digest = append(digest, byte(bits.TrailingZeros64(c.Padded/32)))
	return append(digest, c.Root[:]...), nil
}

// MustV2 is V2 for commitments known to carry a payload; it panics otherwise.
func (c Commitment) MustV2() cid.Cid {
	v2, err := c.V2()
	if err != nil {
		panic(err)
	}
	return v2
}

// Parse reads a piece CID in either form. A v1 CID carries no size, so
// padded must be given for it (and is checked against a v2 CID when given).
func Parse(s string, padded uint64) (Commitment, error) {
	var buf [cidtext.MaxBytes]byte
	if c, ok := cidtext.Parse(s, &buf); ok {
		return fromParts(c.Codec, c.Hash, c.Digest, padded)
	}
	c, err := cid.Decode(s)
	if err != nil {
		return Commitment{}, fmt.Errorf("%w: %v", ErrNotPiece, err)
	}
	return FromCID(c, padded)
}

// FromCID is Parse for a decoded CID.
func FromCID(c cid.Cid, padded uint64) (Commitment, error) {
	dmh, err := multihash.Decode(c.Hash())
	if err != nil {
		return Commitment{}, fmt.Errorf("%w: %v", ErrNotPiece, err)
	}
	return fromParts(c.Type(), dmh.Code, dmh.Digest, padded)
}

// fromParts reads a commitment from a CID's codec and multihash.
func fromParts(codec, hash uint64, digest []byte, padded uint64) (Commitment, error) {
	var out Commitment
	switch {
	case codec == CodecUnsealed && hash == HashTrunc254:
		if len(digest) != 32 {
			return Commitment{}, fmt.Errorf("%w: digest of %d bytes", ErrNotPiece, len(digest))
		}
		if padded == 0 {
			return Commitment{}, ErrSizeNeeded
		}
		if !ValidPadded(padded) {
			return Commitment{}, fmt.Errorf("%w: %d is not a power of two ≥ 128", ErrBadSize, padded)
		}
		copy(out.Root[:], digest)
		out.Padded = padded
		return out, nil
	case codec == CodecRaw && hash == HashTree:
		padding, n, err := varint.FromUvarint(digest)
		if err != nil || len(digest) != n+1+32 {
			return Commitment{}, fmt.Errorf("%w: malformed v2 digest", ErrNotPiece)
		}
		height := int(digest[n])
		if height < 2 || height > 57 {
			return Commitment{}, fmt.Errorf("%w: tree height %d", ErrBadSize, height)
		}
		out.Padded = uint64(32) << height
		if padding >= Unpadded(out.Padded) {
			return Commitment{}, fmt.Errorf("%w: padding %d fills the piece", ErrBadSize, padding)
		}
		out.Payload = Unpadded(out.Padded) - padding
		copy(out.Root[:], digest[n+1:])
		if padded != 0 && padded != out.Padded {
			return Commitment{}, fmt.Errorf("%w: v2 CID says padded %d, given %d", ErrBadSize, out.Padded, padded)
		}
		return out, nil
	}
	return Commitment{}, fmt.Errorf("%w: codec 0x%x with multihash 0x%x", ErrNotPiece, codec, hash)
}
