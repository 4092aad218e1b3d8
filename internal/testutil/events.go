package testutil

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/piece"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// CodecCAR is the multicodec of a CAR file CID (bagbaiera…).
const CodecCAR = 0x0202

// CarCID is a deterministic CAR CID for seed n.
func CarCID(n int) cid.Cid {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n))
	mh, _ := multihash.Sum(b[:], multihash.SHA2_256, -1)
	return cid.NewCidV1(CodecCAR, mh)
}

// FakePiece is a deterministic piece commitment for seed n of a payload of
// size bytes: its root is arbitrary (valid fr32), not computed from bytes.
// Fold tests use it where no bytes exist; tests of bytes use real commP.
func FakePiece(n int, size uint64) piece.Commitment {
	sum := sha256.Sum256([]byte(fmt.Sprintf("piece-%d", n)))
	sum[31] &= 0x3f
	return piece.Commitment{Root: sum, Padded: piece.PaddedSize(size), Payload: size}
}

// Replicated is a valid car.replicated for seed n of size bytes; with
// withPiece it carries a FakePiece.
func Replicated(n int, size uint64, withPiece bool) *events.CarReplicated {
	c := CarCID(n)
	sum := md5.Sum([]byte(c.String()))
	e := &events.CarReplicated{
		Car: c.String(), Size: size, MD5: hex.EncodeToString(sum[:]),
		URLs:         []string{"https://carpark.example/" + c.String() + "/" + c.String() + ".car"},
		ReplicatedAt: "2026-11-22T12:00:00Z",
	}
	if withPiece {
		e.Piece = FakePiece(n, size).MustV2().String()
	}
	return e
}

// MustEncode encodes an event or panics.
func MustEncode(ev events.Event) []byte {
	b, err := events.Encode(ev)
	if err != nil {
		panic(err)
	}
	return b
}
