package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/ferry-dev/ferry/api"
	"github.com/ferry-dev/ferry/carstore"
	"github.com/ferry-dev/ferry/fetch"
	"github.com/ferry-dev/ferry/fetchworker"
	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/internal/node"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go"
)

// fetchFlags are the fetch worker flags shared by serve and fetch-worker,
// but --fetch-timeout, which serve shares with its piece workers
// (workerFlags) and fetch-worker defines itself; the caller sets
// c.Fetch.Policy from the fetch policy flags once parsed.
func fetchFlags(fs *flag.FlagSet, c *node.FetchConfig) {
	fs.Var((*urlList)(&c.Fetch.Gateways), "fetch-gateways", "Trustless Gateway base `URLs` pins are fetched from, in order, after a pin's own origins (comma-separated)")
	fs.Var((*urlList)(&c.Fetch.KuboRPC), "fetch-kubo-rpc", "kubo RPC API base `URLs` (POST /api/v0/dag/export), tried after the gateways (comma-separated)")
	c.Fetch.MaxSize = fetch.DefaultMaxSize
	fs.Var((*size)(&c.Fetch.MaxSize), "fetch-max-size", "largest CAR a pin may make: a larger DAG fails at once")
	fs.DurationVar(&c.Fetch.StallTimeout, "fetch-stall-timeout", fetch.DefaultStallTimeout, "a pin's source that sends nothing for this long fails (retried)")
	fs.IntVar(&c.MaxDeliver, "fetch-attempts", fetchworker.DefaultMaxDeliver, "attempts of a pin's fetch from unavailable sources before it fails and is dead-lettered")
}

// urlList is a comma-separated (or repeated) list of URLs.
type urlList []string

func (l *urlList) String() string { return strings.Join(*l, ",") }
func (l *urlList) Set(v string) error {
	for s := range strings.SplitSeq(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func runFetchWorker(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("fetch-worker", "fetch-worker --car-store DIR --public-url URL [flags]", stderr)
	natsURL := fs.String("nats", defaultNATS, "NATS `URL` of ferry's streams")
	prefix := fs.String("prefix", jetlog.DefaultPrefix, "subject prefix")
	var cfg node.FetchConfig
	fetchFlags(fs, &cfg)
	fs.DurationVar(&cfg.Fetch.Timeout, "fetch-timeout", fetch.DefaultTimeout, "bound on one source's fetch of a pin, and how long a pin no source has is looked for")
	policy := fetchPolicyFlags(fs)
	fs.IntVar(&cfg.Workers, "workers", node.DefaultFetchWorkers, "DAGs fetched at once")
	dir := fs.String("car-store", "", "the CAR store the fetched CARs are put in (required): a `dir`, or s3://bucket[/prefix]?endpoint=host:port with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment")
	public := fs.String("public-url", "", "`URL` base at which deal engines reach this store's CARs (required): <URL>/cars/<car>.car for a directory, the bucket's public URL for s3://")
	httpAddr := fs.String("http", "", "serve the CAR store at /cars/ on this `address` (empty: another server serves it)")
	auth := natsAuthFlags(fs, natsembed.RoleFerry)
	logger := logFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := logger(stderr, slog.LevelInfo)
	if err != nil {
		return err
	}
	if *dir == "" || *public == "" {
		fs.Usage()
		return fmt.Errorf("%w: fetch-worker needs --car-store and --public-url", errUsage)
	}
	if cfg.Fetch.Policy, err = policy.policy(); err != nil {
		return err
	}
	// A directory's CARs are served under <public-url>/cars/; a bucket's
	// objects are read at its own public URL.
	inBucket := strings.HasPrefix(*dir, "s3://")
	base := strings.TrimSuffix(*public, "/") + "/cars"
	if inBucket {
		base = *public
		if *httpAddr != "" {
			return fmt.Errorf("%w: --http serves a directory CAR store, not an s3:// one", errUsage)
		}
	}
	store, err := carstore.Open(*dir, base)
	if err != nil {
		return err
	}
	cfg.Fetch.Store = store
	if n, err := store.(interface {
		Sweep(time.Duration) (int, error)
	}).Sweep(time.Hour); err == nil && n > 0 {
		log.Info("stale spool files removed", "count", n)
	}
	nc, js, err := auth.connect(*natsURL, "ferry fetch-worker", nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	if *httpAddr != "" {
		ln, err := net.Listen("tcp", *httpAddr)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.Handle("GET /cars/", http.StripPrefix("/cars", api.CarServer(*dir)))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("CAR store server stopped", "err", err)
			}
		}()
		defer srv.Close()
		fmt.Fprintf(stdout, "fetch-worker: CAR store at http://%s/cars/\n", ln.Addr())
	}
	fmt.Fprintf(stdout, "fetch-worker: %d workers on %s, CARs in %s\n", cfg.Workers, *natsURL, *dir)
	return untilStopped(ctx, stdout, "fetch-worker", node.FetchPool(js, jetlog.Subjects{Prefix: *prefix}, cfg, log).Run)
}
