package projections

import (
	"encoding/base64"
	"encoding/hex"
	"strconv"

	"github.com/ferry-dev/ferry/frc58"
	"github.com/ferry-dev/ferry/internal/jsonw"
	"github.com/ferry-dev/ferry/wire"
	"github.com/filecoin-project/go-data-segment/merkletree"
)

// appendCarJSON appends json.Marshal(c)'s bytes, without reflection: the
// status API answers one per request, and encoding/json's reflection was
// most of a request's CPU. The inclusion proof is rendered from proof, as
// c.Inclusion = Inclusion(proof) would be; c.Inclusion itself is not
// read. A test holds it equal to json.Marshal.
func appendCarJSON(dst []byte, c *wire.CarView, proof *frc58.Proof) ([]byte, error) {
	dst = append(dst, `{"car":`...)
	dst = jsonw.String(dst, c.Car)
	dst = append(dst, `,"state":`...)
	dst = jsonw.String(dst, c.State)
	if c.Size != 0 {
		dst = append(dst, `,"size":`...)
		dst = strconv.AppendUint(dst, c.Size, 10)
	}
	if c.MD5 != "" {
		dst = append(dst, `,"md5":`...)
		dst = jsonw.String(dst, c.MD5)
	}
	if len(c.URLs) != 0 {
		dst = jsonw.Strings(append(dst, `,"urls":`...), c.URLs)
	}
	if c.ReplicatedAt != "" {
		dst = append(dst, `,"replicatedAt":`...)
		dst = jsonw.String(dst, c.ReplicatedAt)
	}
	if len(c.Source) != 0 {
		dst = append(dst, `,"source":`...)
		var err error
		if dst, err = jsonw.Raw(dst, c.Source); err != nil {
			return nil, err
		}
	}
	if c.Group != "" {
		dst = append(dst, `,"group":`...)
		dst = jsonw.String(dst, c.Group)
	}
	if c.Piece != "" {
		dst = append(dst, `,"piece":`...)
		dst = jsonw.String(dst, c.Piece)
	}
	if c.PieceSize != 0 {
		dst = append(dst, `,"pieceSize":`...)
		dst = strconv.AppendUint(dst, c.PieceSize, 10)
	}
	if c.Aggregate != 0 {
		dst = append(dst, `,"aggregate":`...)
		dst = strconv.AppendUint(dst, c.Aggregate, 10)
	}
	if c.AggregatePiece != "" {
		dst = append(dst, `,"aggregatePiece":`...)
		dst = jsonw.String(dst, c.AggregatePiece)
	}
	if c.Position != nil {
		dst = append(dst, `,"position":`...)
		dst = strconv.AppendInt(dst, int64(*c.Position), 10)
	}
	if c.Offset != nil {
		dst = append(dst, `,"offset":`...)
		dst = strconv.AppendUint(dst, *c.Offset, 10)
	}
	if proof != nil {
		dst = append(dst, `,"inclusion":{"subtree":`...)
		dst = appendProofPath(dst, &proof.ProofSubtree)
		dst = append(dst, `,"index":`...)
		dst = appendProofPath(dst, &proof.ProofIndex)
		dst = append(dst, `,"cbor":"`...)
		// The CBOR goes at the end of dst, then its base64 after it, moved
		// down over it: no buffer of its own.
		at := len(dst)
		var err error
		if dst, err = frc58.AppendProofCBOR(dst, proof); err != nil {
			return nil, err
		}
		n := len(dst) - at
		dst = base64.StdEncoding.AppendEncode(dst, dst[at:])
		dst = append(dst[:at], dst[at+n:]...)
		dst = append(dst, `"}`...)
	}
	if len(c.Deals) != 0 {
		// Rare per aggregate and varied: left to encoding/json.
		var err error
		if dst, err = jsonw.Value(append(dst, `,"deals":`...), c.Deals); err != nil {
			return nil, err
		}
	}
	if c.Reason != "" {
		dst = append(dst, `,"reason":`...)
		dst = jsonw.String(dst, c.Reason)
	}
	return append(dst, '}'), nil
}

// appendProofPath appends a Merkle path as wire.ProofPath encodes it.
func appendProofPath(dst []byte, p *merkletree.ProofData) []byte {
	dst = append(dst, `{"index":`...)
	dst = strconv.AppendUint(dst, p.Index, 10)
	dst = append(dst, `,"path":[`...)
	for i := range p.Path {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = hex.AppendEncode(append(dst, '"'), p.Path[i][:])
		dst = append(dst, '"')
	}
	return append(dst, "]}"...)
}
