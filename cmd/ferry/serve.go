package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"time"

	"github.com/ferry-dev/ferry/events"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/api"
	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/internal/node"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/piece"
	"github.com/ferry-dev/ferry/pieceworker"
)

// Defaults of the local setup every command agrees on.
const (
	defaultHTTP = "127.0.0.1:8080"
	defaultNATS = "nats://127.0.0.1:4222"
	defaultDeal = 32 << 30
)

// serveGroupMaxWait gives a small group a day to fill its own aggregate
// before its CARs join the shared pool.
const serveGroupMaxWait = 24 * time.Hour

func runServe(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("serve", "serve [flags]", stderr)
	data := fs.String("data", "./ferry-data", "data `dir`: JetStream storage (embedded) and read models")
	httpAddr := fs.String("http", defaultHTTP, "HTTP API listen `address`")
	natsListen := fs.String("nats-listen", "127.0.0.1:4222", "embedded NATS client listen `address`")
	natsURL := fs.String("nats", "", "join an existing NATS server at `URL` instead of embedding one")
	natsNoAuth := fs.Bool("nats-no-auth", false, "run the embedded NATS server without users: anyone who reaches it may do anything (loopback --nats-listen only)")
	publishAccount := fs.Bool("nats-publish-account", false, "with --nats: the cluster has ferry's PUBLISH account (docs/operations.md#nats); keep its receipts mirror")
	replicas := fs.Int("replicas", 1, "stream replicas on a NATS cluster")
	prefix := fs.String("prefix", jetlog.DefaultPrefix, "subject prefix")
	deal := size(defaultDeal)
	fs.Var(&deal, "deal-size", "padded deal size, a power of two (32GiB, 8MiB)")
	minPayload := size(0)
	fs.Var(&minPayload, "min-payload", "CAR bytes an aggregate needs before max-wait closes it (default: just over half the deal, Spade's lower bound)")
	maxWait := fs.Duration("max-wait", 4*time.Hour, "how long the oldest CAR may wait once the aggregate has min-payload")
	groupBy := fs.String("group-by", events.GroupNone, "fill an aggregate per group: a `path` into car.replicated's source (source.space, source.account), or none (one stream of CARs)")
	groupMaxWait := fs.Duration("group-max-wait", serveGroupMaxWait, "with --group-by: how long a group's aggregate may stay under min-payload before its CARs go to the shared pool (0: never)")
	dealClock := dealClockFlags(fs, "")
	tick := fs.Duration("tick", 10*time.Second, "how often time enters the input log")
	snapEvery := fs.Uint64("snapshot-every", aggregator.DefaultSnapshotEvery, "inputs between two snapshots of the aggregator's state (a new leader loads the latest and folds only what follows)")
	syncInterval := fs.Duration("sync-interval", 0, "JetStream fsync interval of the embedded server (0: server default, 2m)")
	syncAlways := fs.Bool("sync-always", false, "fsync every JetStream write (slowest, safest)")
	minFree := size(node.DefaultMinFree)
	fs.Var(&minFree, "min-free", "free space kept on the data dir's disk: below it writes are refused (507) and /healthz fails (0: none)")
	maxLag := fs.Duration("max-projection-lag", node.DefaultMaxProjectionLag, "how long the read models may stay behind the aggregate log before /healthz fails (0: never)")
	dedup := fs.Duration("dedup-window", jetlog.DefaultDuplicates, "how long the input log remembers a message id (ferry dedupes CARs in its state beyond it)")
	writeToken := fs.String("write-token", "", "bearer token for POST /v1/cars and admin calls (empty: open)")
	reportToken := fs.String("report-token", "", "bearer token the deal engine sends to POST /v1/deals/report (empty: reports refused)")
	var deals node.DealConfig
	fs.StringVar(&deals.Engine, "deal-engine", "", "`URL` offers are POSTed to (Spade or ferry spade-sim); empty: no offers")
	fs.StringVar(&deals.EngineToken, "deal-engine-token", "", "bearer token sent with offers (never logged)")
	fs.StringVar(&deals.OfferDir, "offer-dir", "", "also write each offer as <RFC3339 time>_<piece CID>.json into `dir`")
	fs.StringVar(&deals.ReportURL, "report-url", "", "reportUrl sent with offers (default: http://<--http>/v1/deals/report)")
	fs.DurationVar(&deals.RetryAfter, "offer-retry", 10*time.Minute, "wait before a transiently failed offer is made again")
	fs.StringVar(&deals.Oracle, "deal-oracle", "", "`URL` of a Spade-style replica document (JSON or zstd) to poll for deals")
	fs.DurationVar(&deals.OracleInterval, "oracle-interval", 10*time.Minute, "deal oracle poll interval")
	var pieces pieceworker.Config
	policy := workerFlags(fs, &pieces)
	fs.IntVar(&pieces.Workers, "piece-workers", runtime.NumCPU(), "piece workers in this process (0: none, leave it to ferry piece-worker)")
	var fetches node.FetchConfig
	fetchFlags(fs, &fetches)
	fs.IntVar(&fetches.Workers, "fetch-workers", node.DefaultFetchWorkers, "fetch workers (pins) in this process (0: none, leave it to ferry fetch-worker)")
	verify := fs.Bool("verify-pieces", false, "compute the piece of CARs that arrive with one too, and reject a mismatch")
	tickAhead := fs.Duration("max-tick-ahead", aggregator.DefaultMaxTickAhead, "the fold ignores a tick further ahead than this of when the input log stored it")
	carStore := fs.String("car-store", "", "the CAR store of fetched pins' CARs: a `dir`, served at /cars/<name> with any CAR file put there (default: <data>/cars), or s3://bucket[/prefix]?endpoint=host:port (credentials in AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)")
	carStoreURL := fs.String("car-store-url", "", "public `URL` base of an s3:// CAR store's objects, named in events (default: http(s)://endpoint/bucket)")
	fs.StringVar(carStore, "cars", "", "deprecated name of --car-store")
	publicURL := fs.String("public-url", "", "`URL` base under which others reach this node: CARs of the store are <URL>/cars/<car>.car (default: http://<--http>)")
	readToken := fs.String("read-token", "", "bearer token for the GET routes (empty: reads are open)")
	bodyRate := size(api.DefaultBodyMinRate)
	fs.Var(&bodyRate, "http-body-rate", "slowest average a write's body may arrive at, per second, after --http-body-grace (slower: 408)")
	bodyGrace := fs.Duration("http-body-grace", api.DefaultBodyGrace, "time a write's body has before --http-body-rate applies, and its longest stall")
	auth := natsAuthFlags(fs, "")
	debugAddr := fs.String("debug-addr", "", "serve Go's profiles (/debug/pprof/) at this loopback `address` (empty: off)")
	verbose := fs.Bool("v", false, "debug logging")
	logger := logFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if !piece.ValidPadded(uint64(deal)) || deal < 4<<10 {
		return fmt.Errorf("%w: --deal-size %s is not a power of two ≥ 4KiB", errUsage, deal.String())
	}
	if *snapEvery == 0 {
		return fmt.Errorf("%w: --snapshot-every must be at least 1", errUsage)
	}
	if pieces.Workers == 0 {
		pieces.Workers = -1 // 0 means none here; the node reads 0 as "one per core"
	}
	if fetches.Workers == 0 {
		fetches.Workers = -1 // likewise
	}
	if minPayload == 0 {
		minPayload = size(aggregator.DefaultMinPayload(uint64(deal)))
	}
	if uint64(minPayload) > piece.Unpadded(uint64(deal)) {
		return fmt.Errorf("%w: --min-payload %s is more than a %s deal holds (%d bytes): max-wait would never close an aggregate",
			errUsage, minPayload.String(), deal.String(), piece.Unpadded(uint64(deal)))
	}
	group, err := events.ParseGroupBy(*groupBy)
	if err != nil {
		return fmt.Errorf("%w: --%v", errUsage, err)
	}
	if *groupMaxWait < 0 {
		return fmt.Errorf("%w: --group-max-wait %s is negative", errUsage, *groupMaxWait)
	}
	if group == "" && !givenSettings(fs)["groupMaxWait"] {
		// No groups to release: a new log records none. Given, it is
		// what a later `ferry settings set --group-by` starts from, and
		// what a grouped log's is held against.
		*groupMaxWait = 0
	}
	natsOpts, err := auth.options()
	if err != nil {
		return err
	}
	if pieces.Fetch.Policy, err = policy.policy(); err != nil {
		return err
	}
	fetches.Fetch.Policy, fetches.Fetch.Timeout = pieces.Fetch.Policy, pieces.Fetch.Timeout
	if err := checkExposure(*httpAddr, *writeToken, *reportToken); err != nil {
		return err
	}
	if *natsURL == "" {
		if err := checkNATSExposure(*natsListen, *natsNoAuth); err != nil {
			return err
		}
	}
	if *debugAddr != "" {
		if err := checkDebugAddr(*debugAddr); err != nil {
			return err
		}
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log, err := logger(stderr, level)
	if err != nil {
		return err
	}
	n, err := node.Start(ctx, node.Config{
		Data: *data, HTTP: *httpAddr, NATSListen: *natsListen, NATS: *natsURL, Replicas: *replicas, Duplicates: *dedup,
		NATSNoAuth: *natsNoAuth, PublishAccount: *publishAccount,
		Subjects: jetlog.Subjects{Prefix: *prefix},
		Fold: dealClock(events.Settings{DealSize: uint64(deal), MinPayload: uint64(minPayload), MaxWait: *maxWait, VerifyPieces: *verify,
			MaxTickAhead: *tickAhead, GroupBy: group, GroupMaxWait: *groupMaxWait}),
		FoldGiven: givenSettings(fs),
		Pieces:    pieces, Fetch: fetches, CarStore: *carStore, CarStoreURL: *carStoreURL, PublicURL: *publicURL,
		SyncInterval: *syncInterval, SyncAlways: *syncAlways, MinFree: uint64(minFree), MaxProjectionLag: *maxLag, Tick: *tick,
		WriteToken: *writeToken, ReportToken: *reportToken, ReadToken: *readToken, NATSOptions: natsOpts,
		Deals: deals, Log: log, HTTPLimits: api.Limits{BodyMinRate: int(bodyRate), BodyGrace: *bodyGrace}, SnapshotEvery: *snapEvery,
	})
	if err != nil {
		return err
	}
	if *natsURL == "" && !isLoopback(*natsListen) {
		log.Warn("the embedded NATS server listens beyond loopback without TLS: NKeys keep the seeds off the wire, but events and receipts travel in clear; reach it through a tunnel or VPN, or run a NATS cluster with TLS and use --nats")
	}
	if *writeToken == "" {
		log.Warn("no --write-token: POST /v1/cars and admin calls are open to anyone who can reach " + *httpAddr)
	}
	n.Run(ctx)
	logDeal := size(n.Settings().DealSize)
	fmt.Fprintf(stdout, "ferry serving\n  http: http://%s\n  nats: %s\n  data: %s\n  deal size: %s\n",
		n.HTTPAddr(), n.NATSURL(), *data, logDeal.String())
	if n.Creds != nil {
		printCredentials(stdout, n.NATSURL(), *prefix, n.Creds)
	}
	if *debugAddr != "" {
		addr, err := serveDebug(*debugAddr)
		if err != nil {
			n.Close()
			return err
		}
		fmt.Fprintf(stdout, "  debug: http://%s/debug/pprof/\n", addr)
	}
	return untilStopped(ctx, stdout, "serve", func(ctx context.Context) error {
		<-ctx.Done()
		log.Info("shutting down")
		if err := n.Close(); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "serve: its logs and read models are in %s\n", *data)
		return nil
	})
}

// foldFlags maps the flags of the fold's settings to the settings' JSON
// names (events.Settings).
var foldFlags = map[string]string{"deal-size": "dealSize", "min-payload": "minPayload", "max-wait": "maxWait",
	"verify-pieces": "verifyPieces", "max-tick-ahead": "maxTickAhead", "group-by": "groupBy", "group-max-wait": "groupMaxWait",
	"deal-timeout": "dealTimeout", "max-offers": "maxOffers", "offer-backoff": "offerBackoff"}

// givenSettings names the fold settings set on the command line: only
// those are held against a log's recorded settings; the rest come from
// the log.
func givenSettings(fs *flag.FlagSet) map[string]bool {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) {
		if name, ok := foldFlags[f.Name]; ok {
			given[name] = true
		}
	})
	return given
}

// printCredentials tells the operator where the embedded server's users
// are and how the stock nats CLI signs in with them.
func printCredentials(w io.Writer, url, prefix string, c *natsembed.Credentials) {
	fmt.Fprintf(w, "  nats users (NKey seeds, --nkey of the stock nats CLI; keep them private):\n")
	what := map[string]string{
		natsembed.RoleFerry:   "ferry's own components (piece-worker, replay)",
		natsembed.RolePublish: "publish " + prefix + "in.car.replicated and read receipts, nothing else",
		natsembed.RoleAdmin:   "everything: operators (audit, dlq, nats stream …)",
	}
	for _, role := range natsembed.Roles {
		fmt.Fprintf(w, "    %-8s %s  (%s)\n", role+":", c.SeedFile(role), what[role])
	}
	fmt.Fprintf(w, "  e.g. nats --server %s --nkey %s pub %sin.car.replicated '{\"type\":\"car.replicated\",…}'\n",
		url, c.SeedFile(natsembed.RolePublish), prefix)
}

// checkNATSExposure refuses an embedded NATS server without users beyond
// loopback. With users (the default) any address is allowed: every client
// signs in with an NKey from the data dir.
func checkNATSExposure(listen string, noAuth bool) error {
	if !noAuth {
		return nil
	}
	if _, _, err := net.SplitHostPort(listen); err != nil {
		return fmt.Errorf("%w: --nats-listen %q: %v", errUsage, listen, err)
	}
	if isLoopback(listen) {
		return nil
	}
	return fmt.Errorf("%w: --nats-listen %s is not a loopback address and --nats-no-auth is set: anyone could forge deals and purge the logs; drop --nats-no-auth", errUsage, listen)
}

// isLoopback reports whether the host of addr is a loopback address.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// Deal clock defaults. 72 hours is about how long Spade's providers have
// to publish a deal they took, so a shorter timeout would only re-send
// offers the engine still holds; five offers at a 10-minute backoff,
// doubled each time, give a failing engine two and a half hours before
// ferry gives up on a set of CARs and leaves it to an operator.
const (
	defaultDealTimeout  = 72 * time.Hour
	defaultMaxOffers    = 5
	defaultOfferBackoff = 10 * time.Minute
)

// dealClockFlags defines the fold's deal clock flags (serve's, or, with
// what = "the … ferry serve runs with", audit's) and returns what sets
// them on a Config.
func dealClockFlags(fs *flag.FlagSet, what string) func(events.Settings) events.Settings {
	if what == "" {
		what = "%s"
	}
	timeout := fs.Duration("deal-timeout", defaultDealTimeout, fmt.Sprintf(what,
		"how long a DEAL_PENDING aggregate waits for its deal report (tick time) before it is offered again (0: forever)"))
	maxOffers := fs.Int("max-offers", defaultMaxOffers, fmt.Sprintf(what,
		"offers of one set of CARs before ferry gives up on them, DEAL_FAILED, until 'ferry aggregates reoffer' (0: no bound)"))
	backoff := fs.Duration("offer-backoff", defaultOfferBackoff, fmt.Sprintf(what,
		"wait before the CARs of a failed deal are aggregated and offered again, doubled per failure (0: at once)"))
	return func(c events.Settings) events.Settings {
		c.DealTimeout, c.MaxOffers, c.OfferBackoff = *timeout, *maxOffers, *backoff
		return c
	}
}

// checkExposure refuses to serve open write routes beyond loopback: with no
// write token, the HTTP API must listen on a loopback address.
func checkExposure(addr, writeToken, reportToken string) error {
	if writeToken != "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%w: --http %q: %v", errUsage, addr, err)
	}
	if isLoopback(addr) {
		return nil
	}
	return fmt.Errorf("%w: --http %s is not a loopback address and no --write-token is set: anyone could publish; set --write-token (and --report-token for the deal engine)", errUsage, addr)
}
