package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/ferry-dev/ferry/carcheck"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime/codec"
	"github.com/ipld/go-ipld-prime/datamodel"
	"github.com/ipld/go-ipld-prime/linking"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	selectorparse "github.com/ipld/go-ipld-prime/traversal/selector/parse"
	"github.com/ipld/go-trustless-utils/traversal"
)

// verifier walks the DAG of one attempt as its verified blocks arrive
// from carcheck's scanner (OnBlock), in a goroutine of its own running
// go-trustless-utils' traversal: the scanner pushes, the traversal pulls,
// and the two meet block by block, so only the block being decoded is in
// memory. A block the traversal needs again (a duplicate the source did
// not resend, dups=n) is read back from the spool file, where every byte
// was written before the scanner saw it.
type verifier struct {
	root  cid.Cid
	spool *os.File
	// where holds each distinct block's place in the stream (the spool
	// file), keyed by multihash: a few dozen bytes per block, never the
	// block.
	where map[string]span

	in   chan blocks.Block // scanner → traversal, one block at a time
	ack  chan struct{}     // traversal → scanner: done with the last block
	quit chan struct{}     // closed when the stream has ended
	done chan struct{}     // closed when the traversal has returned
	err  error             // the traversal's result, once done

	pending bool // traversal side: a block is out, not yet acknowledged

	// The scanner side's view, for reasons.
	rootsErr error
	hookErr  error // what onBlock returned to stop the scanner
	blocks   int
	last     cid.Cid
	lastOff  uint64
}

type span struct{ off, n uint64 }

func newVerifier(ctx context.Context, root cid.Cid, dups bool, spool *os.File) *verifier {
	v := &verifier{
		root: root, spool: spool, where: make(map[string]span),
		in: make(chan blocks.Block), ack: make(chan struct{}),
		quit: make(chan struct{}), done: make(chan struct{}),
	}
	cfg := traversal.Config{
		Root:               root,
		Selector:           selectorparse.CommonSelector_ExploreAllRecursively,
		ExpectDuplicatesIn: dups,
	}
	lsys := cidlink.DefaultLinkSystem()
	lsys.DecoderChooser = skipRaw(lsys.DecoderChooser)
	lsys.StorageReadOpener = v.readBack
	lsys.StorageWriteOpener = func(linking.LinkContext) (io.Writer, linking.BlockWriteCommitter, error) {
		return io.Discard, func(datamodel.Link) error { return nil }, nil
	}
	go func() {
		defer close(v.done)
		_, v.err = cfg.VerifyBlockStream(ctx, v, lsys)
	}()
	return v
}

// skipRaw decodes a raw block as empty bytes without reading it: a raw
// block links to nothing, so the walk needs none of its bytes, and they
// already hashed to its CID in the scanner. go-ipld-prime's raw codec
// would copy each block (a megabyte per leaf) only to drop it.
func skipRaw(next func(datamodel.Link) (codec.Decoder, error)) func(datamodel.Link) (codec.Decoder, error) {
	return func(l datamodel.Link) (codec.Decoder, error) {
		if l.(cidlink.Link).Cid.Prefix().Codec == cid.Raw {
			return func(na datamodel.NodeAssembler, r io.Reader) error {
				if _, err := io.Copy(io.Discard, r); err != nil {
					return err
				}
				return na.AssignBytes(nil)
			}, nil
		}
		return next(l)
	}
}

// onRoots holds the CAR header to the one requested root. The verdict
// waits for the first block: a source that lacks the root answers with a
// header and no blocks (boxo's gateway names an empty identity CID then),
// which is "not found", not bad bytes.
func (v *verifier) onRoots(roots []cid.Cid) error {
	if len(roots) != 1 || !roots[0].Equals(v.root) {
		v.rootsErr = &failure{kind: ErrInvalid, reason: fmt.Sprintf("the CAR header names roots %s, not the requested root", rootList(roots))}
	}
	return nil
}

func rootList(roots []cid.Cid) string {
	return "[" + bounded(len(roots), 3, " ", func(i int) string { return roots[i].String() }) + "]"
}

// onBlock hands a verified block to the traversal and waits until the
// traversal is done with it (the buffer is the scanner's).
func (v *verifier) onBlock(c cid.Cid, off uint64, data []byte) error {
	v.hookErr = v.take(c, off, data)
	return v.hookErr
}

func (v *verifier) take(c cid.Cid, off uint64, data []byte) error {
	if v.rootsErr != nil {
		v.blocks++
		v.last, v.lastOff = c, off
		return v.rootsErr
	}
	v.blocks++
	v.last, v.lastOff = c, off
	if _, ok := v.where[string(c.Hash())]; !ok {
		v.where[string(c.Hash())] = span{off, uint64(len(data))}
	}
	b, _ := blocks.NewBlockWithCid(data, c)
	select {
	case v.in <- b:
	case <-v.done:
		return v.walkErr()
	}
	select {
	case <-v.ack:
		return nil
	case <-v.done:
		return v.walkErr()
	}
}

// walkErr is the traversal's verdict on a block it did not take: it has
// returned, so the block follows a complete DAG or a failure.
func (v *verifier) walkErr() error {
	if v.err != nil {
		return v.err
	}
	return traversal.ErrExtraneousBlock
}

// Next is the traversal's BlockStream.
func (v *verifier) Next(ctx context.Context) (blocks.Block, error) {
	if v.pending {
		v.pending = false
		select {
		case v.ack <- struct{}{}:
		case <-v.quit:
		}
	}
	select {
	case b := <-v.in:
		v.pending = true
		return b, nil
	case <-v.quit:
		return nil, io.EOF
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// readBack loads a block already seen from the spool file.
func (v *verifier) readBack(lc linking.LinkContext, l datamodel.Link) (io.Reader, error) {
	c := l.(cidlink.Link).Cid
	s, ok := v.where[string(c.Hash())]
	if !ok {
		return nil, fmt.Errorf("block %s: not in the stream so far", c)
	}
	return io.NewSectionReader(v.spool, int64(s.off), int64(s.n)), nil
}

// end says the stream is over and returns the traversal's verdict: nil
// when the DAG was complete and nothing followed it.
func (v *verifier) end() error {
	close(v.quit)
	<-v.done
	return v.err
}

// verdict turns the traversal's error into a failure with a reason naming
// the block and offset.
func (v *verifier) verdict(err error) *failure {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, traversal.ErrMissingBlock):
		return &failure{kind: ErrNotFound, reason: fmt.Sprintf("the CAR ends after %d blocks, short of the DAG: %s", v.blocks, missing(err))}
	case errors.Is(err, traversal.ErrUnexpectedBlock):
		return &failure{kind: ErrInvalid, reason: fmt.Sprintf("block %d (%s) at offset %d is not the next block of the DAG in depth-first order", v.blocks, v.last, v.lastOff)}
	case errors.Is(err, traversal.ErrExtraneousBlock):
		return &failure{kind: ErrInvalid, reason: fmt.Sprintf("block %d (%s) at offset %d follows the complete DAG", v.blocks, v.last, v.lastOff)}
	}
	var f *failure
	if errors.As(err, &f) {
		return f
	}
	// Anything else failed to decode: the bytes hash to their CID but are
	// not a node of its codec, or link to what no DAG can.
	return &failure{kind: ErrInvalid, reason: fmt.Sprintf("not a DAG: block %d (%s) at offset %d does not decode", v.blocks, v.last, v.lastOff)}
}

// missing names the block the traversal did not find.
func missing(err error) string {
	var nf interface{ NotFound() bool }
	for _, e := range unwrapAll(err) {
		if errors.As(e, &nf) {
			// format.ErrNotFound's text is "ipld: could not find <cid>".
			return fmt.Sprint(e)
		}
	}
	return "a block is missing"
}

func unwrapAll(err error) []error {
	if m, ok := err.(interface{ Unwrap() []error }); ok {
		return m.Unwrap()
	}
	return []error{err}
}

// checkVerdict turns carcheck's error into a failure.
func checkVerdict(err error, blocks int, max uint64) *failure {
	var ie *carcheck.InvalidError
	switch {
	case errors.Is(err, carcheck.ErrTooLarge):
		return &failure{kind: ErrTooLarge, reason: fmt.Sprintf("the CAR exceeds the limit of %d bytes", max)}
	case errors.Is(err, carcheck.ErrTooSmall) && blocks == 0, errors.Is(err, carcheck.ErrTruncated):
		if blocks == 0 {
			return &failure{kind: ErrNotFound, reason: "the CAR holds no block: the source lacks the root"}
		}
		return &failure{kind: ErrNotFound, reason: "the source sent part of the DAG: " + reasonOf(err)}
	case errors.As(err, &ie):
		return &failure{kind: ErrInvalid, reason: ie.Reason}
	}
	return &failure{kind: ErrUnavailable, reason: carcheck.Describe(err)}
}

func reasonOf(err error) string {
	if ie, ok := errors.AsType[*carcheck.InvalidError](err); ok {
		return ie.Reason
	}
	return carcheck.Describe(err)
}
