package ipfstest

import (
	"bytes"
	"fmt"

	"github.com/ipfs/go-cid"
	dagpb "github.com/ipld/go-codec-dagpb"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/datamodel"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	"github.com/ipld/go-ipld-prime/node/basicnode"
	"github.com/ipld/go-ipld-prime/traversal"
)

// Links decodes a raw, dag-pb or dag-cbor block with go-ipld-prime's
// codecs, not the code under test, and returns the CIDs it links to.
func Links(c cid.Cid, data []byte) ([]cid.Cid, error) {
	var nb datamodel.NodeBuilder
	var err error
	switch c.Type() {
	case cid.Raw:
		return nil, nil
	case cid.DagProtobuf:
		nb = dagpb.Type.PBNode.NewBuilder()
		err = dagpb.DecodeBytes(nb, data)
	case cid.DagCBOR:
		nb = basicnode.Prototype.Any.NewBuilder()
		err = dagcbor.Decode(nb, bytes.NewReader(data))
	default:
		return nil, fmt.Errorf("block %s has codec %#x", c, c.Type())
	}
	if err != nil {
		return nil, fmt.Errorf("block %s: %w", c, err)
	}
	ls, err := traversal.SelectLinks(nb.Build())
	if err != nil {
		return nil, fmt.Errorf("block %s: %w", c, err)
	}
	out := make([]cid.Cid, len(ls))
	for i, l := range ls {
		out[i] = l.(cidlink.Link).Cid
	}
	return out, nil
}
