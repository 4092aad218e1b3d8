package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ferry-dev/ferry/carcheck"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/ctxio"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// codecCAR is the multicodec of a CAR file's CID (bagbaiera…).
const codecCAR = 0x0202

// dirEvents describes every .car file of dir as a car.replicated whose URL
// is urlBase/<file name>, and returns the file names beside them. One pass
// per file computes the CAR CID (sha256), size, md5, and checks the CAR
// and computes its piece; withPiece puts the piece in the event, otherwise
// ferry's piece workers compute it. Every file is read before anything is
// sent, so a broken CAR stops the run with nothing sent; an interrupt
// stops it within a read.
func dirEvents(ctx context.Context, dir, urlBase string, withPiece bool, prog *dirProgress) ([]*events.CarReplicated, []string, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.car"))
	if err != nil {
		return nil, nil, err
	}
	sort.Strings(names)
	prog.total.Store(int64(len(names)))
	out := make([]*events.CarReplicated, 0, len(names))
	for i, name := range names {
		ev, err := fileEvent(ctx, name, strings.TrimRight(urlBase, "/"), withPiece)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, ev)
		names[i] = filepath.Base(name)
		prog.files.Add(1)
		prog.bytes.Add(int64(ev.Size))
	}
	return out, names, nil
}

// dirProgress counts the files dirEvents has read, for progress lines
// and for the summary of an interrupted run.
type dirProgress struct {
	files, total, bytes atomic.Int64
}

func (p *dirProgress) line(elapsed time.Duration) string {
	return fmt.Sprintf("publish: hashed %d/%d CAR files, %s, %s, %s", p.files.Load(), p.total.Load(),
		humanMiB(float64(p.bytes.Load())), perSecond(p.files.Load(), elapsed), elapsed.Round(time.Second))
}

func fileEvent(ctx context.Context, name, urlBase string, withPiece bool) (*events.CarReplicated, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	res, err := carcheck.Check(io.TeeReader(ctxio.Reader(ctx, f), h), carcheck.CheckOptions{})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	mh, err := multihash.Encode(h.Sum(nil), multihash.SHA2_256)
	if err != nil {
		return nil, err
	}
	ev := &events.CarReplicated{
		Car: cid.NewCidV1(codecCAR, mh).String(), Size: res.Size, MD5: res.MD5,
		URLs: []string{urlBase + "/" + filepath.Base(name)},
	}
	if withPiece {
		ev.Piece = res.Commitment.MustV2().String()
	}
	return ev, nil
}
