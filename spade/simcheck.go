package spade

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/ferry-dev/ferry/internal/ctxio"
	"github.com/ferry-dev/ferry/piece"
	"github.com/filecoin-project/go-data-segment/datasegment"
	commp "github.com/filecoin-project/go-fil-commp-hashhash"
	"github.com/filecoin-project/go-state-types/abi"
)

// check downloads an offer's CARs and verifies them and the aggregate. It
// returns why the offer fails, or "" when everything agrees with it.
func (s *Simulator) check(ctx context.Context, o *Offer) string {
	dir, err := os.MkdirTemp(s.cfg.TempDir, "spade-sim-")
	if err != nil {
		return "engine: " + err.Error()
	}
	defer os.RemoveAll(dir)
	paths := make([]string, len(o.Pieces))
	for i := range o.Pieces {
		p := &o.Pieces[i]
		paths[i] = filepath.Join(dir, fmt.Sprintf("%d.car", i))
		if reason := s.fetchPiece(ctx, p, paths[i]); reason != "" {
			return fmt.Sprintf("pieces[%d] (car %s): %s", i, p.Car, reason)
		}
	}
	agg, reason := layoutOf(o)
	if reason != "" {
		return reason
	}
	return s.checkAggregate(ctx, o, agg, paths)
}

// fetchPiece downloads a CAR from the first of its URLs that answers and
// checks its size, md5 and piece commitment.
func (s *Simulator) fetchPiece(ctx context.Context, p *OfferPiece, path string) string {
	var failures []string
	for _, u := range p.URLs {
		sum, err := s.download(ctx, u, path, p.Size)
		if err != nil {
			failures = append(failures, fmt.Sprintf("%s: %v", u, err))
			continue
		}
		return sum.verify(p)
	}
	return "download failed: " + strings.Join(failures, "; ")
}

// sums is what one pass over a CAR's bytes learns.
type sums struct {
	size  uint64
	md5   string
	piece piece.Commitment
}

// download writes at most size+1 bytes of url to path, computing md5 and
// the piece commitment on the way, so a CAR is read once.
func (s *Simulator) download(ctx context.Context, url, path string, size uint64) (*sums, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("answered %s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return sumCopy(f, io.LimitReader(resp.Body, int64(size)+1))
}

// sumCopy copies r to w and returns the size, md5 and piece commitment of
// the bytes. It stands in for carcheck.Check, which also verifies the CAR's
// blocks; the simulator only needs what an engine checks.
func sumCopy(w io.Writer, r io.Reader) (*sums, error) {
	md := md5.New()
	cp := &commp.Calc{}
	n, err := io.Copy(io.MultiWriter(w, md, cp), r)
	if err != nil {
		abandon(cp)
		return nil, err
	}
	c, err := digest(cp, uint64(n))
	if err != nil {
		return nil, err
	}
	return &sums{size: uint64(n), md5: hex.EncodeToString(md.Sum(nil)), piece: c}, nil
}

// digest finishes a commitment of n payload bytes written to cp.
func digest(cp *commp.Calc, n uint64) (piece.Commitment, error) {
	if n < commp.MinPiecePayload {
		// commp refuses tiny payloads, but a piece is its payload followed
		// by zeros, so padding with zeros leaves the commitment unchanged.
		cp.Write(make([]byte, commp.MinPiecePayload-n))
	}
	root, padded, err := cp.Digest()
	if err != nil {
		return piece.Commitment{}, fmt.Errorf("piece commitment: %w", err)
	}
	c := piece.Commitment{Padded: padded, Payload: n}
	copy(c.Root[:], root)
	return c, nil
}

// abandon ends cp's goroutines without a result. commp's own Reset
// panics (in a goroutine) when less than one 32512-byte slab was written,
// so finish a throwaway digest instead: Digest always ends them.
func abandon(cp *commp.Calc) {
	cp.Write(make([]byte, commp.MinPiecePayload))
	cp.Digest()
}

// verify compares what the bytes are with what the offer says they are.
func (s *sums) verify(p *OfferPiece) string {
	switch {
	case s.size > p.Size:
		return fmt.Sprintf("size mismatch: more than the %d bytes the offer says", p.Size)
	case s.size != p.Size:
		return fmt.Sprintf("size mismatch: %d bytes, the offer says %d", s.size, p.Size)
	case !strings.EqualFold(s.md5, p.MD5):
		return fmt.Sprintf("md5 mismatch: the bytes have %s, the offer says %s", s.md5, p.MD5)
	}
	want, err := piece.Parse(p.Piece, p.PieceSize)
	if err != nil {
		return "piece: " + err.Error() // Validate has ruled this out
	}
	if s.piece.Root != want.Root || s.piece.Padded != want.Padded {
		return fmt.Sprintf("piece mismatch: the bytes have piece %s, the offer says %s", s.piece.MustV2(), p.Piece)
	}
	return ""
}

// layoutOf builds go-data-segment's aggregate of the offered pieces in the
// offered order and checks that its index places each piece at the
// offered offset.
func layoutOf(o *Offer) (*datasegment.Aggregate, string) {
	infos := make([]abi.PieceInfo, len(o.Pieces))
	for i, p := range o.Pieces {
		c, err := piece.Parse(p.Piece, p.PieceSize)
		if err != nil {
			return nil, fmt.Sprintf("pieces[%d]: %v", i, err)
		}
		infos[i] = abi.PieceInfo{Size: abi.PaddedPieceSize(c.Padded), PieceCID: c.V1()}
	}
	agg, err := datasegment.NewAggregate(abi.PaddedPieceSize(o.DealSize), infos)
	if err != nil {
		return nil, fmt.Sprintf("layout: %v", err)
	}
	for i, e := range agg.Index.Entries {
		if e.Offset != o.Pieces[i].Offset {
			return nil, fmt.Sprintf("offset mismatch: pieces[%d] is offered at %d, the data segment index places it at %d",
				i, o.Pieces[i].Offset, e.Offset)
		}
	}
	return agg, ""
}

// checkAggregate compares the offered aggregate piece with one computed
// here: from the assembled bytes when the deal is small enough, else from
// go-data-segment's tree of the offered pieces.
func (s *Simulator) checkAggregate(ctx context.Context, o *Offer, agg *datasegment.Aggregate, paths []string) string {
	want, err := o.Commitment()
	if err != nil {
		return "piece: " + err.Error() // Validate has ruled this out
	}
	var got piece.Commitment
	if o.DealSize > s.cfg.MaxAssemble {
		s.log.Info("deal above max-assemble: comparing go-data-segment's aggregate commitment instead of assembling the bytes",
			"aggregate", o.Aggregate, "dealSize", o.DealSize, "maxAssemble", s.cfg.MaxAssemble)
		got = piece.Commitment{Root: agg.Tree.Root(), Padded: o.DealSize, Payload: piece.Unpadded(o.DealSize)}
	} else if got, err = assemble(ctx, agg, paths); err != nil {
		return "assembling the aggregate: " + err.Error()
	}
	if got.Root != want.Root || got.Padded != want.Padded {
		return fmt.Sprintf("aggregate piece mismatch: the assembled deal has piece %s, the offer says %s", got.MustV2(), o.Piece)
	}
	return ""
}

// assemble streams the deal's bytes — each CAR at its offset, zeros
// between, the data segment index at the end — through commP. It is the
// independent check of ferry's arithmetic: it reads O(dealSize) bytes.
func assemble(ctx context.Context, agg *datasegment.Aggregate, paths []string) (piece.Commitment, error) {
	readers := make([]io.Reader, len(paths))
	for i, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			return piece.Commitment{}, err
		}
		defer f.Close()
		readers[i] = f
	}
	deal, err := agg.AggregateObjectReader(readers)
	if err != nil {
		return piece.Commitment{}, err
	}
	cp := &commp.Calc{}
	n, err := io.Copy(cp, ctxio.Reader(ctx, deal))
	if err != nil {
		abandon(cp)
		return piece.Commitment{}, err
	}
	c, err := digest(cp, uint64(n))
	if want := piece.Unpadded(uint64(agg.DealSize)); err == nil && uint64(n) != want {
		err = fmt.Errorf("%d bytes assembled, a %d byte deal holds %d", n, agg.DealSize, want)
	}
	return c, err
}
