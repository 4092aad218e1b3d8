package pack

import (
	"encoding/binary"
	"fmt"
	"os"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// carWriter writes a CARv1 in one pass over its blocks: the header first
// with a placeholder root of the root's length, the blocks as they come,
// and the real root written over the placeholder at the end. A block
// already in the CAR is not written again.
type carWriter struct {
	f    *os.File
	w    *asyncWriter
	off  uint64 // bytes written so far
	seen map[string]struct{}
	hdr  int // the header's length
	buf  [binary.MaxVarintLen64]byte
}

// placeholder is a CIDv1 dag-cbor sha2-256 of zeros: every root a pack
// writes (a listing, a directory) is a CIDv1 with a 32-byte sha2-256, so
// the real header has the same length.
var placeholder = func() cid.Cid {
	mh, _ := multihash.Encode(make([]byte, 32), multihash.SHA2_256)
	return cid.NewCidV1(cid.DagCBOR, mh)
}()

func newCARWriter(f *os.File) (*carWriter, error) {
	c := &carWriter{f: f, w: newAsyncWriter(f, 1<<20), seen: map[string]struct{}{}}
	h := carHeader(placeholder)
	c.hdr = len(h)
	if _, err := c.w.Write(h); err != nil {
		c.close()
		return nil, err
	}
	c.off = uint64(len(h))
	return c, nil
}

// carHeader is a CARv1 header naming root: a varint length, then the
// dag-cbor map {"roots": [root], "version": 1} (keys in dag-cbor order).
func carHeader(root cid.Cid) []byte {
	raw := root.Bytes()
	var m []byte
	m = append(m, 0xa2)             // map(2)
	m = append(m, 0x65)             // text(5)
	m = append(m, "roots"...)       //
	m = append(m, 0x81, 0xd8, 0x2a) // array(1), tag(42)
	m = appendCBORBytesHead(m, len(raw)+1)
	m = append(m, 0x00)         // the multibase identity prefix of a CID link
	m = append(m, raw...)       //
	m = append(m, 0x67)         // text(7)
	m = append(m, "version"...) //
	m = append(m, 0x01)         // 1
	h := binary.AppendUvarint(nil, uint64(len(m)))
	return append(h, m...)
}

func appendCBORBytesHead(b []byte, n int) []byte {
	switch {
	case n < 24:
		return append(b, 0x40|byte(n))
	case n < 256:
		return append(b, 0x58, byte(n))
	default:
		return append(b, 0x59, byte(n>>8), byte(n))
	}
}

// put writes b unless the CAR has it; it says whether it wrote.
func (c *carWriter) put(b Block) (bool, error) {
	key := b.CID.KeyString()
	if _, ok := c.seen[key]; ok {
		return false, nil
	}
	c.seen[key] = struct{}{}
	n := len(key) + len(b.Data)
	v := binary.PutUvarint(c.buf[:], uint64(n))
	if _, err := c.w.Write(c.buf[:v]); err != nil {
		return false, err
	}
	if _, err := c.w.WriteString(key); err != nil {
		return false, err
	}
	if _, err := c.w.Write(b.Data); err != nil {
		return false, err
	}
	c.off += uint64(v + n)
	return true, nil
}

// finish writes root into the header; describe syncs the file.
func (c *carWriter) finish(root cid.Cid) error {
	if err := c.close(); err != nil {
		return err
	}
	h := carHeader(root)
	if len(h) != c.hdr {
		return fmt.Errorf("car root %s: its header is %d bytes, the placeholder's %d", root, len(h), c.hdr)
	}
	_, err := c.f.WriteAt(h, 0)
	return err
}

// close writes what is buffered and stops the writer's goroutine; a
// CAR given up is closed too.
func (c *carWriter) close() error { return c.w.close() }
