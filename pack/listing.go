package pack

import (
	"bytes"
	"crypto/sha256"

	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime/codec"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/datamodel"
	"github.com/ipld/go-ipld-prime/fluent/qp"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	"github.com/ipld/go-ipld-prime/node/basicnode"
	"github.com/multiformats/go-multihash"
)

// listBudget is about how many bytes of entries one list block holds.
const listBudget = 512 << 10

// listing makes a data CAR's root: list blocks of {"entries": […]} in
// walk order, each at most about listBudget, and a root {"ferry-pack": 1,
// "car": index, "lists": [list…]} (docs/packing.md).
type listing struct {
	sink    Sink
	entries []listEntry
	bytes   int
	lists   []cid.Cid
}

// listEntry is a whole file (File set) or a part (Blocks set).
type listEntry struct {
	Path           string
	Size           uint64
	File           cid.Cid
	Offset, Length uint64
	Blocks         []Link
}

var dagCBOR = dagcbor.EncodeOptions{AllowLinks: true, MapSortMode: codec.MapSortMode_RFC7049}

func (l *listing) add(e listEntry) error {
	l.entries = append(l.entries, e)
	l.bytes += len(e.Path) + 64 + 40*len(e.Blocks)
	if l.bytes >= listBudget {
		return l.flush()
	}
	return nil
}

func (l *listing) flush() error {
	if len(l.entries) == 0 && len(l.lists) > 0 {
		return nil
	}
	n, err := qp.BuildMap(basicnode.Prototype.Any, 1, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "entries", qp.List(int64(len(l.entries)), func(la datamodel.ListAssembler) {
			for _, e := range l.entries {
				qp.ListEntry(la, entryNode(e))
			}
		}))
	})
	if err != nil {
		return err
	}
	c, err := l.block(n)
	if err != nil {
		return err
	}
	l.lists = append(l.lists, c)
	l.entries, l.bytes = l.entries[:0], 0
	return nil
}

func entryNode(e listEntry) qp.Assemble {
	if e.File.Defined() {
		return qp.Map(3, func(ma datamodel.MapAssembler) {
			qp.MapEntry(ma, "path", qp.String(e.Path))
			qp.MapEntry(ma, "size", qp.Int(int64(e.Size)))
			qp.MapEntry(ma, "file", qp.Link(cidlink.Link{Cid: e.File}))
		})
	}
	return qp.Map(5, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "path", qp.String(e.Path))
		qp.MapEntry(ma, "size", qp.Int(int64(e.Size)))
		qp.MapEntry(ma, "offset", qp.Int(int64(e.Offset)))
		qp.MapEntry(ma, "length", qp.Int(int64(e.Length)))
		qp.MapEntry(ma, "blocks", qp.List(int64(len(e.Blocks)), func(la datamodel.ListAssembler) {
			for _, b := range e.Blocks {
				qp.ListEntry(la, qp.Link(cidlink.Link{Cid: b.CID}))
			}
		}))
	})
}

// root sinks the last list block and the root, and returns the root.
func (l *listing) root(index int) (cid.Cid, error) {
	if err := l.flush(); err != nil {
		return cid.Undef, err
	}
	n, err := qp.BuildMap(basicnode.Prototype.Any, 3, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "ferry-pack", qp.Int(1))
		qp.MapEntry(ma, "car", qp.Int(int64(index)))
		qp.MapEntry(ma, "lists", qp.List(int64(len(l.lists)), func(la datamodel.ListAssembler) {
			for _, c := range l.lists {
				qp.ListEntry(la, qp.Link(cidlink.Link{Cid: c}))
			}
		}))
	})
	if err != nil {
		return cid.Undef, err
	}
	return l.block(n)
}

func (l *listing) block(n datamodel.Node) (cid.Cid, error) {
	var buf bytes.Buffer
	if err := dagCBOR.Encode(n, &buf); err != nil {
		return cid.Undef, err
	}
	sum := sha256.Sum256(buf.Bytes())
	mh, err := multihash.Encode(sum[:], multihash.SHA2_256)
	if err != nil {
		return cid.Undef, err
	}
	c := cid.NewCidV1(cid.DagCBOR, mh)
	return c, l.sink(Block{CID: c, Data: buf.Bytes()})
}
