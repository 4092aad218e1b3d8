package node

import (
	"context"
	"errors"
	"net/netip"
	"runtime"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/frc58"
	"github.com/ferry-dev/ferry/internal/ctxerr"
	"github.com/ferry-dev/ferry/internal/urlpolicy"
	"github.com/ferry-dev/ferry/piece"
	"github.com/ferry-dev/ferry/pieceworker"
	"github.com/ferry-dev/ferry/wire"
	"github.com/ferry-dev/ferry/workqueue"
)

// workItem is the piece work of a queued CAR: its car.replicated as the
// producer sent it (with the claimed piece, under --verify-pieces).
func workItem(d events.Decision) *events.CarReplicated {
	ev := &events.CarReplicated{Car: d.Car, Piece: d.Piece}
	if r := d.Record; r != nil {
		ev.Size, ev.MD5, ev.URLs, ev.ReplicatedAt, ev.Source = r.Size, r.MD5, r.URLs, r.ReplicatedAt, r.Source
	}
	return ev
}

func viewItem(c wire.CarView) *events.CarReplicated {
	return &events.CarReplicated{Car: c.Car, Size: c.Size, MD5: c.MD5, URLs: c.URLs, ReplicatedAt: c.ReplicatedAt, Source: c.Source}
}

// runPieces dispatches queued CARs to the work queue — those found at start
// and those the projector applies — and runs this process's workers.
func (n *Node) runPieces(ctx context.Context) {
	n.goRun("piece-dispatch", func() error {
		err := n.Store.Queued(func(c wire.CarView) error {
			return pieceworker.Enqueue(ctx, n.JS, n.cfg.Subjects, viewItem(c))
		})
		if err != nil {
			return ctxerr.NilIfDone(ctx, err)
		}
		for {
			select {
			case <-ctx.Done():
				return nil
			case ev := <-n.work:
				n.enqueue(ctx, ev)
			}
		}
	})
	if n.cfg.Pieces.Workers < 0 {
		return
	}
	cfg := n.cfg.Pieces
	cfg.Subjects, cfg.Log = n.cfg.Subjects, n.log
	if cfg.Workers == 0 {
		cfg.Workers = runtime.NumCPU()
	}
	if cfg.MaxSize == 0 {
		cfg.MaxSize = piece.Unpadded(frc58.MaxPiece(n.cfg.Fold.DealSize))
	}
	cfg.Fetch.Policy = n.fetchPolicy()
	pool := pieceworker.New(n.JS, cfg)
	n.goRun("piece-workers", func() error { return pool.Run(ctx) })
}

// pieceWork is the status API's reader of the piece workers' attempt
// records, wherever the workers run.
func (n *Node) pieceWork(ctx context.Context) (func(context.Context, string) (*wire.WorkAttempt, error), error) {
	attempts, err := workqueue.OpenAttempts(ctx, n.JS, pieceworker.Queue(n.cfg.Subjects))
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, car string) (*wire.WorkAttempt, error) {
		w, err := attempts.Last(ctx, car)
		if errors.Is(err, workqueue.ErrNoAttempt) {
			return nil, nil
		}
		return w, err
	}, nil
}

// fetchPolicy is the configured fetch policy, which also allows this
// node's own HTTP address, where it serves its CAR store: CARs published
// with URLs under its /cars/ (as in the README's walk-through, and the
// CARs of pins) are fetched from loopback without opening the private
// network to every URL. Only that address and port are allowed; on an unspecified listen
// address (0.0.0.0:8080) that is the port on loopback.
func (n *Node) fetchPolicy() *urlpolicy.Policy {
	p := n.cfg.Pieces.Fetch.Policy
	if p == nil {
		p = urlpolicy.Default
	}
	if n.httpLn == nil {
		return p
	}
	own, err := netip.ParseAddrPort(n.httpLn.Addr().String())
	if err != nil {
		return p
	}
	if !own.Addr().IsUnspecified() {
		return p.With(urlpolicy.AddrPortRule(own))
	}
	return p.With(
		urlpolicy.AddrPortRule(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), own.Port())),
		urlpolicy.AddrPortRule(netip.AddrPortFrom(netip.IPv6Loopback(), own.Port())),
	)
}

// enqueue puts a CAR's work on the queue until it is stored or the node
// stops: a NATS blip must not leave a CAR QUEUED forever.
func (n *Node) enqueue(ctx context.Context, ev *events.CarReplicated) {
	_ = n.retryQueue(ctx, "piece", ev.Car, func() error { return pieceworker.Enqueue(ctx, n.JS, n.cfg.Subjects, ev) })
}

// retryQueue runs put, a change to a work queue, retrying (250 ms doubling
// to 10 s) until it succeeds or ctx ends; it returns ctx's error then.
func (n *Node) retryQueue(ctx context.Context, what, key string, put func() error) error {
	wait := 250 * time.Millisecond
	for {
		err := put()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		n.log.Warn(what+" work not queued; retrying", "key", key, "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
	}
}
