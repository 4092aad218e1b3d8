package node

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferry-dev/ferry/carstore"
	"github.com/ferry-dev/ferry/fetch"
	"github.com/ferry-dev/ferry/fetchworker"
	"github.com/ferry-dev/ferry/frc58"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/piece"
	"github.com/ferry-dev/ferry/projections"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultFetchWorkers is the number of DAGs serve fetches at once: a fetch
// waits on the network far more than on the CPU.
const DefaultFetchWorkers = 4

// FetchConfig configures the fetch workers of a node.
type FetchConfig struct {
	// Workers is the number of DAGs fetched at once: 0 is
	// DefaultFetchWorkers, a negative number none (other processes fetch,
	// ferry fetch-worker).
	Workers int
	// Fetch says where the workers look and how long they try; the node
	// sets its Store to the CAR store.
	Fetch fetch.Config
	// MaxDeliver, Backoff and AckWait shape the work queue's retries
	// (fetchworker.Config; zero values are its defaults).
	MaxDeliver int
	Backoff    []time.Duration
	AckWait    time.Duration
}

// carDir is the CAR store's directory.
func (n *Node) carDir() string {
	if n.cfg.CarStore != "" {
		return n.cfg.CarStore
	}
	return filepath.Join(n.cfg.Data, "cars")
}

// PublicURL is the URL base under which others reach this node.
func (n *Node) PublicURL() string {
	if n.cfg.PublicURL != "" {
		return strings.TrimSuffix(n.cfg.PublicURL, "/")
	}
	host, port, err := net.SplitHostPort(n.HTTPAddr())
	if err != nil {
		return "http://" + n.HTTPAddr()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// openCarStore opens the CAR store: a directory the HTTP handler serves,
// or an S3 bucket read at its own public URL.
func (n *Node) openCarStore() error {
	public := n.PublicURL() + "/cars"
	if n.carsInBucket() {
		public = n.cfg.CarStoreURL
	}
	st, err := carstore.Open(n.carDir(), public)
	if err != nil {
		return err
	}
	n.Cars = st
	return nil
}

// carsInBucket says whether the CAR store is an S3 bucket, which ferry
// does not serve at /cars/.
func (n *Node) carsInBucket() bool { return strings.HasPrefix(n.carDir(), "s3://") }

// spoolAge is how old a spool file must be before Sweep removes it at
// start: older than any fetch this process could have left running, and
// workers on other machines spool in their own stores.
const spoolAge = time.Hour

// sweeper is a CAR store whose dead writers' spool files can be removed
// (both carstore stores are).
type sweeper interface {
	Sweep(age time.Duration) (int, error)
}

// runFetches sweeps the spool files a dead process left in the CAR store
// and runs this process's fetch workers.
func (n *Node) runFetches(ctx context.Context) {
	if swept, err := n.Cars.(sweeper).Sweep(spoolAge); err != nil {
		n.log.Warn("CAR store spool not swept", "err", err)
	} else if swept > 0 {
		n.log.Info("stale spool files removed", "count", swept)
	}
	cfg := n.cfg.Fetch
	if cfg.Workers < 0 {
		return
	}
	if cfg.Workers == 0 {
		cfg.Workers = DefaultFetchWorkers
	}
	cfg.Fetch.Store = n.Cars
	// A CAR larger than a deal holds would be fetched only to be
	// rejected by the fold.
	if most := piece.Unpadded(frc58.MaxPiece(n.cfg.Fold.DealSize)); cfg.Fetch.MaxSize == 0 || cfg.Fetch.MaxSize > most {
		cfg.Fetch.MaxSize = most
	}
	pool := FetchPool(n.JS, n.cfg.Subjects, cfg, n.log)
	n.goRun("fetch-workers", func() error { return pool.Run(ctx) })
}

// FetchPool is a pool of cfg.Workers fetch workers on js storing into
// cfg.Fetch.Store: serve's, or ferry fetch-worker's.
func FetchPool(js jetstream.JetStream, sub jetlog.Subjects, cfg FetchConfig, log *slog.Logger) *fetchworker.Pool {
	return fetchworker.New(js, fetchworker.Config{
		Subjects: sub, Workers: cfg.Workers, Fetcher: fetch.New(cfg.Fetch), Timeout: cfg.Fetch.Timeout,
		MaxDeliver: cfg.MaxDeliver, Backoff: cfg.Backoff, AckWait: cfg.AckWait, Log: log,
	})
}

// EnqueueFetch puts a pinned CID's fetch on the work queue, retrying
// (250 ms doubling to 10 s) until it is stored or the node stops.
func (n *Node) EnqueueFetch(ctx context.Context, it fetchworker.Item) error {
	if err := it.Check(); err != nil {
		return err
	}
	return n.retryQueue(ctx, "fetch", it.CID, func() error { return fetchworker.Enqueue(ctx, n.JS, n.cfg.Subjects, it) })
}

// CancelFetch withdraws a CID's fetch: from the queue, and from the worker
// running it (fetchworker.Cancel).
func (n *Node) CancelFetch(ctx context.Context, cid string) error {
	return n.retryQueue(ctx, "fetch cancel", cid, func() error { return fetchworker.Cancel(ctx, n.JS, n.cfg.Subjects, cid) })
}

// runPins runs the pins projector, and puts back on the work queue every
// CID the pins read model says is still to be fetched: the queue keeps
// one item per CID, so a CID queued already is not queued twice.
func (n *Node) runPins(ctx context.Context) {
	n.goRun("pins", func() error {
		wants, err := n.Pins.Wanted()
		if err != nil {
			return err
		}
		for _, w := range wants {
			n.wantFetch(ctx, w)
		}
		return n.reopenable(ctx, func(ctx context.Context) error { return n.PinProjector.Run(ctx, true) })
	})
}

// wantFetch queues the fetch of a CID the pins read model wants.
func (n *Node) wantFetch(ctx context.Context, w projections.PinWant) {
	it := fetchworker.Item{CID: w.CID, Origins: w.Origins, Source: w.Source, Since: w.Since}
	if err := n.EnqueueFetch(ctx, it); err != nil && ctx.Err() == nil {
		n.log.Error("pin not queued for fetching", "cid", w.CID, "err", err)
	}
}

// unwantFetch withdraws the fetch of a CID whose requests were cancelled.
func (n *Node) unwantFetch(ctx context.Context, cid string) {
	if err := n.CancelFetch(ctx, cid); err != nil && ctx.Err() == nil {
		n.log.Error("fetch of a cancelled pin not withdrawn", "cid", cid, "err", err)
	}
}
