package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/aggregator/snapshots"
	"github.com/ferry-dev/ferry/api"
	"github.com/ferry-dev/ferry/carstore"
	"github.com/ferry-dev/ferry/dashboard"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/pieceworker"
	"github.com/ferry-dev/ferry/projections"
	"github.com/ferry-dev/ferry/receipts"
	"github.com/ferry-dev/ferry/spade"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	bolt "go.etcd.io/bbolt"
)

// Config is everything `ferry serve` takes.
type Config struct {
	// Data holds JetStream storage (embedded) and the read models.
	Data string
	// HTTP is the API's listen address.
	HTTP string
	// NATSListen is the embedded server's client address.
	NATSListen string
	// NATS, when set, joins an existing server instead of embedding one.
	NATS     string
	Replicas int
	// NATSNoAuth runs the embedded server without users: anyone who
	// reaches it may do anything. By default it requires the users of
	// <Data>/nats (see natsembed.Roles), generated on first start.
	NATSNoAuth bool
	// PublishAccount keeps the receipts mirror of the publish account
	// (natsembed.PublishAccount) on a NATS that has one; the embedded
	// server with users always has.
	PublishAccount bool
	// Duplicates is the input log's message id window (0: the default).
	Duplicates time.Duration
	Subjects   jetlog.Subjects
	// Fold is the settings a new log is made under. A log that records
	// its settings is folded under those; FoldGiven names (by JSON name)
	// the settings the operator chose explicitly, and one that disagrees
	// with the log's stops Start (aggregator.Reconcile): a policy setting
	// with the policy the log is folded under now (policy.go).
	Fold      events.Settings
	FoldGiven map[string]bool
	// MinFree is the free space kept on the data dir's disk: below it
	// publishes are refused as a full disk and /healthz fails (0: none;
	// `ferry serve` keeps DefaultMinFree). See disk.go.
	MinFree uint64
	// MaxProjectionLag is how long the read models may stay behind the
	// aggregate log's last sequence (as its stream leader holds it) before
	// /healthz fails (0: never; `ferry serve` keeps
	// DefaultMaxProjectionLag). See lag.go.
	MaxProjectionLag time.Duration
	// SyncInterval is JetStream's fsync interval (embedded server only);
	// 0 keeps the server default of 2 minutes; SyncAlways fsyncs each write.
	SyncInterval time.Duration
	SyncAlways   bool
	Tick         time.Duration
	WriteToken   string
	ReportToken  string
	// ReadToken, when set, guards the GET routes too.
	ReadToken string
	// HTTPLimits bound how slowly a write's body may arrive.
	HTTPLimits api.Limits
	// NATSOptions add credentials and TLS when joining an existing NATS;
	// the embedded server ignores them.
	NATSOptions []nats.Option
	Deals       DealConfig
	// Pieces configures the piece workers run inside this process.
	Pieces pieceworker.Config
	// Fetch configures the fetch workers run inside this process.
	Fetch FetchConfig
	// CarStore is the CAR store, where fetch workers put the CARs of
	// pins: a directory, served at /cars/ with any other CAR file put
	// there (default <Data>/cars), or an s3:// bucket (carstore.Open).
	CarStore string
	// CarStoreURL is the public URL base of an s3:// CAR store's objects
	// (carstore.Open); a directory's is <PublicURL>/cars.
	CarStoreURL string
	// PublicURL is the URL base under which others reach this node: the
	// CARs of the store are at <PublicURL>/cars/<car>.car in the events
	// (default http://<HTTP>, loopback for an unspecified address).
	PublicURL string
	Log       *slog.Logger

	// SnapshotEvery is the number of inputs between two snapshots of the
	// aggregator's state (0: aggregator.DefaultSnapshotEvery); their
	// dedupe runs are cached in SnapshotCachePath(Data).
	SnapshotEvery uint64
}

// Node is a running ferry.
type Node struct {
	cfg      Config
	releases atomic.Int64 // memory releases after a burst (memory.go)
	log      *slog.Logger
	Server   *server.Server // nil when joined to an existing NATS
	// Creds are the embedded server's users; nil with NATSNoAuth or NATS.
	Creds     *natsembed.Credentials
	Conn      *nats.Conn
	JS        jetstream.JetStream
	Store     *projections.Store
	Projector *projections.Projector
	// Pins is the pins read model, built by PinProjector from the pin
	// events of the input log.
	Pins         *projections.PinStore
	PinProjector *projections.PinProjector
	Runner       *aggregator.Runner
	Pub          *jetlog.Publisher
	API          *api.API
	// Dashboard is the page at GET / (package dashboard).
	Dashboard *dashboard.Dashboard
	Dealer    *spade.Dealer
	Receipter *receipts.Publisher
	// Cars is the CAR store.
	Cars     carstore.Store
	Oracle   *spade.OraclePoller
	Registry *prometheus.Registry
	httpSrv  *http.Server
	httpLn   net.Listener
	embedCfg natsembed.Config // the embedded server's, for reopening JetStream
	disk     *diskWatch
	lag      *lagWatch
	metrics  *metrics
	streams  *streamCache // the streams' figures for /metrics (queues.go)

	// retry fires when a cause every part shares has passed (the disk has
	// room again): parts waiting out a backoff start again at once.
	retry signal
	// reopened fires when JetStream was reopened: the consumers the
	// aggregator and the projector read through are gone (see reopenable).
	reopened signal

	work chan *events.CarReplicated

	cancel context.CancelFunc
	wg     sync.WaitGroup
	errMu  sync.Mutex
	err    error
	errs   map[string]partErr // the parts down now
	// disconnected is when the NATS connection was lost (UnixNano; 0
	// while connected), for /healthz (health.go).
	disconnected atomic.Int64
	ctx          context.Context
	done         <-chan struct{}
}

// Start brings a node up. It returns once the HTTP API listens; the
// aggregator and projector run in the background until Close.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Subjects.Prefix == "" {
		cfg.Subjects = jetlog.DefaultSubjects
	}
	n := &Node{cfg: cfg, log: cfg.Log, Registry: prometheus.NewRegistry(), work: make(chan *events.CarReplicated, 4096),
		errs: map[string]partErr{}, ctx: context.Background(), done: make(chan struct{})}
	if err := n.start(ctx); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func (n *Node) start(ctx context.Context) error {
	if err := os.MkdirAll(n.cfg.Data, 0o755); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	// The read models' lock comes first: a second ferry on this data dir
	// stops here, before it starts a NATS server on the same store.
	store, err := projections.Open(ReadModelPath(n.cfg.Data), n.cfg.Fold.DealSize)
	if errors.Is(err, bolt.ErrTimeout) {
		return fmt.Errorf("another ferry serve is using %s: %w", n.cfg.Data, err)
	}
	if err != nil {
		return err
	}
	n.Store = store
	if n.Pins, err = projections.OpenPins(PinsPath(n.cfg.Data)); err != nil {
		return err
	}
	if err := n.connect(); err != nil {
		return err
	}
	err = jetlog.EnsureStreams(ctx, n.JS, jetlog.StreamOptions{Subjects: n.cfg.Subjects, Replicas: n.cfg.Replicas, Duplicates: n.cfg.Duplicates})
	if err != nil {
		return err
	}
	if err := n.reconcile(ctx); err != nil {
		return err
	}
	if n.cfg.PublishAccount || n.Creds != nil {
		if err := natsembed.EnsureReceiptsMirror(ctx, n.Conn, n.cfg.Replicas); err != nil {
			return err
		}
	}
	n.disk = n.watchDisk()
	n.Pub = jetlog.NewPublisher(n.JS, n.cfg.Subjects)
	n.Pub.Gate = n.disk.gate
	n.Projector = projections.NewProjector(n.JS, store, n.log)
	n.lag = newLagWatch(n.JS, n.Projector.Seq, n.cfg.MaxProjectionLag)
	snaps, err := snapshots.Open(ctx, n.JS, SnapshotCachePath(n.cfg.Data), n.log)
	if err != nil {
		return err
	}
	n.streams = newStreamCache(n.JS)
	n.metrics = newMetrics(n.Registry, n)
	n.Runner = aggregator.NewRunner(n.JS, aggregator.RunnerConfig{
		Fold: n.cfg.Fold, Subjects: n.cfg.Subjects, Holder: holderName(), Tick: n.cfg.Tick, Log: n.log,
		OnBatch: n.metrics.observeBatch, OnInput: n.metrics.observeInput,
		Snapshots: snaps, SnapshotEvery: n.cfg.SnapshotEvery,
	})
	n.PinProjector = projections.NewPinProjector(n.JS, n.cfg.Subjects, n.Pins, projections.PinHooks{
		Wanted: n.wantFetch, Unwanted: n.unwantFetch,
	})
	n.API = &api.API{Store: store, Pins: n.Pins, Pub: n.Pub, DealSize: n.cfg.Fold.DealSize,
		WriteToken: n.cfg.WriteToken, ReportToken: n.cfg.ReportToken, ReadToken: n.cfg.ReadToken, Log: n.log,
		Metrics: promhttp.HandlerFor(n.Registry, promhttp.HandlerOpts{}), Health: n.health, Behind: n.lag.behind,
		Limits: n.cfg.HTTPLimits, Policy: n.policy}
	if n.API.PieceWork, err = n.pieceWork(ctx); err != nil {
		return err
	}
	n.Dashboard = n.newDashboard()
	if err := n.listen(); err != nil {
		return err
	}
	if err := n.openCarStore(); err != nil { // after listen: its URLs name this process's address
		return err
	}
	n.setupDeals() // after listen: offers name this process's address as their reportUrl
	n.Projector.OnApplied = n.onApplied
	return nil
}

// Settings is what the node folds under: the log's, or those of a new log.
func (n *Node) Settings() events.Settings { return n.cfg.Fold }

// SnapshotCachePath is where a data dir caches the dedupe runs of the
// aggregator's snapshots (and of the state it folds while leading).
func SnapshotCachePath(data string) string { return filepath.Join(data, "seen") }

// ReadModelPath is where a data dir keeps its read models.
func ReadModelPath(data string) string { return filepath.Join(data, "views.db") }

// PinsPath is where a data dir keeps the pins read model.
func PinsPath(data string) string { return filepath.Join(data, "pins.db") }

func holderName() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s/%d/%d", host, os.Getpid(), time.Now().UnixNano())
}

// CredentialsDir is where a data dir keeps the embedded server's users.
func CredentialsDir(data string) string { return filepath.Join(data, "nats") }

func (n *Node) connect() error {
	url := n.cfg.NATS
	opts := []nats.Option{nats.Name("ferry"), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond)}
	if url != "" {
		opts = append(opts, n.cfg.NATSOptions...)
	} else {
		// The embedded server knows only its own users: credentials meant
		// for a cluster (FERRY_NATS_USER in the environment) would clash.
		var err error
		if url, err = n.embed(); err != nil {
			return err
		}
		if n.Creds != nil {
			signIn, err := n.Creds.Option(natsembed.RoleFerry)
			if err != nil {
				return err
			}
			opts = append(opts, signIn)
		}
	}
	nc, err := nats.Connect(url, append(opts, n.watchConnection()...)...)
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", url, err)
	}
	n.Conn = nc
	js, err := jetlog.NewJetStream(nc)
	if err != nil {
		return err
	}
	n.JS = js
	return nil
}

// embed starts the embedded server, with the data dir's users unless
// NATSNoAuth, and returns its client URL.
func (n *Node) embed() (string, error) {
	cfg := natsembed.Config{
		Dir: filepath.Join(n.cfg.Data, "jetstream"), Listen: n.cfg.NATSListen,
		SyncInterval: n.cfg.SyncInterval, SyncAlways: n.cfg.SyncAlways, Prefix: n.cfg.Subjects.Prefix,
	}
	if !n.cfg.NATSNoAuth {
		creds, err := natsembed.LoadCredentials(CredentialsDir(n.cfg.Data))
		if err != nil {
			return "", err
		}
		n.Creds, cfg.Auth = creds, creds
	}
	s, err := natsembed.Start(cfg)
	if err != nil {
		return "", err
	}
	n.Server, n.embedCfg = s, cfg
	n.log.Info("embedded NATS server ready", "url", s.ClientURL(), "store", cfg.Dir, "auth", cfg.Auth != nil)
	return s.ClientURL(), nil
}

// watchDisk watches the data dir and, embedded, the JetStream dir (which
// an operator may have put on a disk of its own).
func (n *Node) watchDisk() *diskWatch {
	d := &diskWatch{dirs: []string{n.cfg.Data}, reserve: n.cfg.MinFree, log: n.log,
		recovered: n.retry.fire, onReopen: n.reopened.fire}
	if n.Server != nil {
		d.server, d.embed = n.Server, n.embedCfg
		d.dirs = append(d.dirs, n.embedCfg.Dir)
	}
	return d
}

func (n *Node) listen() error {
	ln, err := net.Listen("tcp", n.cfg.HTTP)
	if err != nil {
		return fmt.Errorf("http listen %s: %w", n.cfg.HTTP, err)
	}
	n.httpLn = ln
	// Headers must come within 10 s and an idle keep-alive connection is
	// closed after 2 min; bodies have their own deadlines, by route
	// (api.Limits).
	n.httpSrv = &http.Server{Handler: n.metrics.instrument(n.handler()), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	return nil
}

// handler is the API, plus the dashboard and the CAR store's directory.
func (n *Node) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", n.API.Handler())
	n.Dashboard.Register(mux) // GET / exactly, and /ui/
	if !n.carsInBucket() {
		mux.Handle("GET /cars/", http.StripPrefix("/cars", api.CarServer(n.carDir())))
	}
	return mux
}

// Run starts the background parts; it returns at once.
func (n *Node) Run(ctx context.Context) {
	ctx, n.cancel = context.WithCancel(ctx)
	n.ctx, n.done = ctx, ctx.Done()
	n.goRun("disk", func() error { return n.disk.run(ctx) })
	n.goRun("aggregator", func() error { return n.reopenable(ctx, n.Runner.Run) })
	n.goRun("projector", func() error {
		return n.reopenable(ctx, func(ctx context.Context) error { return n.Projector.Run(ctx, true) })
	})
	n.goRun("memory", func() error { return n.releaseMemory(ctx) })
	n.goRun("projection-lag", func() error { return n.lag.run(ctx) })
	n.goRun("dashboard-rate", func() error { return n.Dashboard.Sample(ctx) })
	n.runDeals(ctx)
	n.runPieces(ctx)
	n.runFetches(ctx)
	n.runPins(ctx)
	n.goRun("http", func() error {
		err := n.httpSrv.Serve(n.httpLn)
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	})
	n.log.Info("ferry serving", "http", "http://"+n.HTTPAddr(), "dealSize", n.cfg.Fold.DealSize)
}

// goRun runs a part until the node stops. A part that fails is restarted
// after a backoff (1 s doubling to 30 s, reset after a minute of running,
// cut short and reset when the disk has room again: retryNow); while it is
// down its error makes /healthz fail once the part has been failing for
// longer than healthGrace (health.go).
func (n *Node) goRun(name string, fn func() error) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		wait := time.Second
		var since time.Time // the first failure of the part's current run of failures
		for {
			start := time.Now()
			err := fn()
			if n.ctx.Err() != nil {
				return
			}
			if err == nil {
				return // the part is done
			}
			// A run longer than the grace ends a run of failures.
			if since.IsZero() || time.Since(start) > healthGrace {
				since = time.Now()
			}
			n.setErr(name, err, since)
			n.log.Error("part stopped; restarting", "part", name, "err", err, "in", wait)
			if time.Since(start) > time.Minute {
				wait = time.Second
			}
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(wait):
				wait = min(2*wait, 30*time.Second)
			case <-n.retry.wait():
				wait = time.Second
			}
			n.setErr(name, nil, time.Time{})
		}
	}()
}

// reopenable runs fn, and starts it again at once when JetStream is
// reopened: its ordered consumers vanished with the old JetStream, and
// nats.go would notice only after missed heartbeats (about 10 s). A
// restart is what a crash would be, which the aggregator and projector
// are built for.
func (n *Node) reopenable(ctx context.Context, fn func(context.Context) error) error {
	for {
		reopened := n.reopened.wait()
		runCtx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-reopened:
				cancel()
			case <-runCtx.Done():
			}
		}()
		err := fn(runCtx)
		cancel()
		select {
		case <-reopened:
			if ctx.Err() == nil {
				continue
			}
		default:
		}
		return err
	}
}

// signal wakes everyone waiting on it, each time it fires.
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

func (s *signal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *signal) fire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}

func (n *Node) setErr(part string, err error, since time.Time) {
	n.errMu.Lock()
	defer n.errMu.Unlock()
	if err == nil {
		delete(n.errs, part)
		return
	}
	n.errs[part] = partErr{err: err, since: since}
	if n.err == nil {
		n.err = fmt.Errorf("%s: %w", part, err)
	}
}

// Err is the first error a part stopped with since the node started, or
// nil.
func (n *Node) Err() error {
	n.errMu.Lock()
	defer n.errMu.Unlock()
	return n.err
}

// failing is an error naming the parts that are down now, or nil.
func (n *Node) failing() error {
	return n.failingFor(0, time.Now())
}

// HTTPAddr is the address the API listens on.
func (n *Node) HTTPAddr() string {
	if n.httpLn == nil {
		return ""
	}
	return n.httpLn.Addr().String()
}

// NATSURL is the client URL of the NATS server in use.
func (n *Node) NATSURL() string {
	if n.Server != nil {
		return n.Server.ClientURL()
	}
	return n.cfg.NATS
}

// Close stops everything and waits for it.
func (n *Node) Close() error {
	if n.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = n.httpSrv.Shutdown(ctx)
		cancel()
	} else if n.httpLn != nil {
		n.httpLn.Close()
	}
	if n.cancel != nil {
		n.cancel()
	}
	n.wg.Wait()
	if n.Conn != nil {
		n.Conn.Drain()
		n.Conn.Close()
	}
	if n.Store != nil {
		n.Store.Close()
	}
	if n.Pins != nil {
		n.Pins.Close()
	}
	if n.Server != nil {
		n.Server.Shutdown()
		n.Server.WaitForShutdown()
	}
	// Only parts down at the stop make it fail: one that failed and
	// recovered (a NATS blip) is history, logged when it happened.
	return n.failing()
}
