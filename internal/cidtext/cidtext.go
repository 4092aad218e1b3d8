// Package cidtext reads and writes the text of version 1 CIDs in
// lower-case base32, the form go-cid prints them in, without go-cid's
// allocations: the fold parses two CIDs and prints one for every CAR it
// takes in. Key is the digest the fold and the read models index CIDs by.
//
// Rules:
//   - It is a fast path, not a second parser. It recognises a subset of
//     what go-cid accepts (CIDv1 text in canonical base32 whose multihash
//     is one of a few codes) and for that subset gives go-cid's answer;
//     FuzzParseAgreesWithGoCid holds it to that. Whenever it reports
//     false, the caller asks go-cid.
//   - Lower-case base32 without padding and with zero trailing bits is a
//     one-to-one code, so text that Parse accepts is exactly the text
//     go-cid prints for the CID: it is canonical as it stands.
package cidtext

import (
	"crypto/sha256"
	"encoding/binary"

	"github.com/multiformats/go-varint"
)

// MaxBytes bounds the binary CIDs Parse reads.
const MaxBytes = 96

// Multihash codes Parse recognises: sha2-256, and the two piece
// commitment hashes (FRC-0069 v2 and v1).
const (
	hashSHA256       = 0x12
	hashPieceTree    = 0x1011
	hashPieceTrunc   = 0x1012
	cidVersion1      = 1
	maxVarintBytes   = 9 // go-varint's bound: values below 2^63
	base32Alphabet   = "abcdefghijklmnopqrstuvwxyz234567"
	multibaseBase32  = 'b'
	invalidBase32Val = 0xff
)

var decodeMap = func() (m [256]byte) {
	for i := range m {
		m[i] = invalidBase32Val
	}
	for i := range len(base32Alphabet) {
		m[base32Alphabet[i]] = byte(i)
	}
	return m
}()

// CID is a parsed CIDv1. Digest points into the buffer given to Parse.
type CID struct {
	Codec  uint64
	Hash   uint64 // multihash code
	Digest []byte
}

// Parse reads s when it is the canonical text of a CIDv1 with a
// recognised multihash, using buf for the bytes.
func Parse(s string, buf *[MaxBytes]byte) (CID, bool) {
	if len(s) < 2 || s[0] != multibaseBase32 {
		return CID{}, false
	}
	n, ok := decode(buf, s[1:])
	if !ok {
		return CID{}, false
	}
	b := buf[:n]
	var c CID
	var version, length uint64
	if version, b, ok = uvarint(b); !ok || version != cidVersion1 {
		return CID{}, false
	}
	if c.Codec, b, ok = uvarint(b); !ok {
		return CID{}, false
	}
	if c.Hash, b, ok = uvarint(b); !ok {
		return CID{}, false
	}
	if length, b, ok = uvarint(b); !ok || length != uint64(len(b)) {
		return CID{}, false
	}
	switch c.Hash {
	case hashSHA256, hashPieceTrunc:
		if length != 32 {
			return CID{}, false
		}
	case hashPieceTree:
	default:
		return CID{}, false
	}
	c.Digest = b
	return c, true
}

// decode decodes lower-case base32 text without padding into buf,
// refusing text whose final bits are not zero (not canonical) or whose
// length no byte string encodes to.
func decode(buf *[MaxBytes]byte, s string) (int, bool) {
	var acc uint64
	bits, n := 0, 0
	for i := range len(s) {
		v := decodeMap[s[i]]
		if v == invalidBase32Val {
			return 0, false
		}
		acc = acc<<5 | uint64(v)
		if bits += 5; bits >= 8 {
			bits -= 8
			if n == len(buf) {
				return 0, false
			}
			buf[n] = byte(acc >> bits)
			n++
		}
	}
	// Five or more bits left over is a character too many; fewer must be
	// the zero padding of the last byte.
	if bits >= 5 || acc&(1<<bits-1) != 0 {
		return 0, false
	}
	return n, true
}

// uvarint reads a minimally encoded unsigned varint below 2^63, as
// go-cid does (through go-varint).
func uvarint(b []byte) (uint64, []byte, bool) {
	v, n, err := varint.FromUvarint(b)
	if err != nil {
		return 0, nil, false
	}
	return v, b[n:], true
}

// Append appends the text of the CIDv1 of codec and the multihash
// (hash, digest): what go-cid's String prints for it.
func Append(dst []byte, codec, hash uint64, digest []byte) []byte {
	var raw [MaxBytes + 4*maxVarintBytes]byte
	b := binary.AppendUvarint(raw[:0], cidVersion1)
	b = binary.AppendUvarint(b, codec)
	b = binary.AppendUvarint(b, hash)
	b = binary.AppendUvarint(b, uint64(len(digest)))
	b = append(b, digest...)
	dst = append(dst, multibaseBase32)
	var acc uint64
	bits := 0
	for _, x := range b {
		acc = acc<<8 | uint64(x)
		for bits += 8; bits >= 5; {
			bits -= 5
			dst = append(dst, base32Alphabet[acc>>bits&31])
		}
	}
	if bits > 0 {
		dst = append(dst, base32Alphabet[acc<<(5-bits)&31])
	}
	return dst
}

// Key is the first 16 bytes of the SHA-256 of a CID's text: the key the
// fold and the read models index CARs by. Texts of up to 128 bytes (every
// CID ferry takes) are hashed from a copy on the stack: converting the
// string to a slice would allocate one per call.
func Key(text string) [16]byte {
	var buf [128]byte
	var sum [sha256.Size]byte
	if len(text) <= len(buf) {
		n := copy(buf[:], text)
		sum = sha256.Sum256(buf[:n])
	} else {
		sum = sha256.Sum256([]byte(text))
	}
	return [16]byte(sum[:16])
}
