//go:build cluster

package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/internal/carload"
	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/internal/proctest"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// bins are the binaries built once for every test of the package: ferry,
// and nats-server itself, built from the module go.mod names.
var bins struct {
	ferry, natsServer string
}

func TestMain(m *testing.M) {
	os.Exit(proctest.Main(m, "cluster", func(dir string) error {
		bins.ferry = filepath.Join(dir, "ferry")
		bins.natsServer = filepath.Join(dir, "nats-server")
		var flags []string
		if os.Getenv("CLUSTER_RACE") == "1" {
			flags = append(flags, "-race")
		}
		if err := proctest.Build(bins.ferry, "./cmd/ferry", flags...); err != nil {
			return err
		}
		return proctest.Build(bins.natsServer, "github.com/nats-io/nats-server/v2")
	}))
}

// params are the knobs of a run, from the environment.
type params struct {
	N        int           // CLUSTER_N: CARs over the whole run, shared out among the scenarios
	Ferries  int           // CLUSTER_FERRIES: ferry serve processes
	Seed     uint64        // CLUSTER_SEED
	Publish  time.Duration // CLUSTER_PUBLISH: how long each scenario's CARs are published over
	Converge time.Duration // CLUSTER_CONVERGE: bound on every CAR reaching DEAL_PROCESSED after a scenario
	Current  time.Duration // CLUSTER_CURRENT: bound on every replica being current after a restart
	Rounds   int           // CLUSTER_ROUNDS: how many times the scenarios run
}

func loadParams(t *testing.T) params {
	p := params{
		N:        proctest.EnvInt("CLUSTER_N", 320),
		Ferries:  max(2, proctest.EnvInt("CLUSTER_FERRIES", 2)),
		Publish:  proctest.EnvDur("CLUSTER_PUBLISH", 12*time.Second),
		Converge: proctest.EnvDur("CLUSTER_CONVERGE", 2*time.Minute),
		Current:  proctest.EnvDur("CLUSTER_CURRENT", 30*time.Second),
		Rounds:   max(1, proctest.EnvInt("CLUSTER_ROUNDS", 1)),
	}
	p.Seed = uint64(time.Now().UnixNano())
	if s, err := strconv.ParseUint(os.Getenv("CLUSTER_SEED"), 10, 64); err == nil {
		p.Seed = s
	}
	t.Logf("params: N=%d ferries=%d rounds=%d seed=%d (CLUSTER_SEED) publish=%s per scenario, converge=%s, current=%s",
		p.N, p.Ferries, p.Rounds, p.Seed, p.Publish, p.Converge, p.Current)
	return p
}

const (
	reportToken = "cluster-report-token"
	// account is ferry's account in docs/cluster/accounts.conf.
	account = "FERRY"
)

// natsNode is one nats-server process of the cluster, started from its
// docs/cluster config with the addresses and the store rewritten.
type natsNode struct {
	name                   string // n1, n2, n3: its server_name
	client, route, monitor int    // ports on 127.0.0.1
	conf                   string
	proc                   *proctest.Proc
}

func (n *natsNode) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.client) }

// ferryProc is one ferry serve process.
type ferryProc struct {
	name string
	http string // its API address
	data string
	proc *proctest.Proc
	runs int
}

// rig is the whole cluster: three NATS servers, ferries, a deal engine
// simulator, the front the producers and the deal engine use, the CARs.
type rig struct {
	t     *testing.T
	p     params
	ps    *proctest.Procs
	dir   string
	creds *natsembed.Credentials
	nodes []*natsNode
	ferry []*ferryProc
	cars  *carload.Corpus
	sim   string
	front *front
	admin jetstream.JetStream
	// receipts is the publish user's, in the PUBLISH account.
	receipts jetstream.JetStream
	health   *healthLog
	aggs     *seqWatch
}

func newRig(t *testing.T, p params) *rig {
	r := &rig{t: t, p: p, ps: proctest.New(t, os.Getenv("CLUSTER_LOGDIR")), dir: t.TempDir()}
	creds, err := natsembed.LoadCredentials(filepath.Join(r.dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	r.creds = creds
	r.writeConfigs()
	for i := range r.nodes {
		r.startNode(i)
	}
	r.admin = r.connect("cluster test admin", natsembed.RoleAdmin)
	r.receipts = r.connect("cluster test producer", natsembed.RolePublish)
	r.waitJetStream()
	r.cars = carload.New(t, p.N, p.Seed, "cluster")
	r.sim = fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	if err := os.MkdirAll(filepath.Join(r.dir, "sim"), 0o755); err != nil {
		t.Fatal(err)
	}
	r.ps.Start("spade-sim", bins.ferry, "spade-sim", "--listen", r.sim, "--report-token", reportToken,
		"--delay", "50ms", "--failure-rate", "0.05", "--seed", strconv.FormatUint(p.Seed, 10),
		"--tmp", filepath.Join(r.dir, "sim"))
	for i := range p.Ferries {
		r.ferry = append(r.ferry, &ferryProc{name: fmt.Sprintf("f%d", i+1),
			http: fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t)), data: filepath.Join(r.dir, fmt.Sprintf("f%d", i+1))})
	}
	r.front = newFront(t, r.ferry)
	r.health = watchHealth(t, r.ferry)
	// One after the other, as an operator brings them up: the first
	// creates the streams.
	for _, f := range r.ferry {
		r.startFerry(f)
		proctest.WaitHealthy(t, f.proc, f.http, 2*time.Minute)
	}
	r.aggs = watchSeqs(t, r.admin)
	return r
}

// writeConfigs writes n1.conf … n3.conf and accounts.conf of docs/cluster
// with loopback ports, a store dir each, a route password and the public
// keys of r.creds. Every rewrite must find what it replaces, so a change
// to the documented files cannot leave the tier running something else.
func (r *rig) writeConfigs() {
	t := r.t
	root, err := proctest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	docs := filepath.Join(root, "docs", "cluster")
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(docs, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	dir := filepath.Join(r.dir, "conf")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	accounts := rewrite(t, "accounts.conf", read("accounts.conf"),
		"UFERRY_PUBLIC_KEY", r.creds.PublicKey(natsembed.RoleFerry),
		"UADMIN_PUBLIC_KEY", r.creds.PublicKey(natsembed.RoleAdmin),
		"UPUBLISH_PUBLIC_KEY", r.creds.PublicKey(natsembed.RolePublish))
	if err := os.WriteFile(filepath.Join(dir, "accounts.conf"), []byte(accounts), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		r.nodes = append(r.nodes, &natsNode{name: fmt.Sprintf("n%d", i+1),
			client: proctest.FreePort(t), route: proctest.FreePort(t), monitor: proctest.FreePort(t)})
	}
	secret := make([]byte, 12)
	_, _ = rand.Read(secret)
	password := hex.EncodeToString(secret)
	for _, n := range r.nodes {
		pairs := []string{
			"0.0.0.0:4222", fmt.Sprintf("127.0.0.1:%d", n.client),
			"127.0.0.1:8222", fmt.Sprintf("127.0.0.1:%d", n.monitor),
			"0.0.0.0:6222", fmt.Sprintf("127.0.0.1:%d", n.route),
			"/var/lib/nats", filepath.Join(r.dir, n.name),
			"ROUTE_PASSWORD", password,
		}
		for _, m := range r.nodes {
			pairs = append(pairs, "@"+m.name+":6222", fmt.Sprintf("@127.0.0.1:%d", m.route))
		}
		conf := rewrite(t, n.name+".conf", read(n.name+".conf"), pairs...)
		n.conf = filepath.Join(dir, n.name+".conf")
		if err := os.WriteFile(n.conf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// rewrite replaces each old with its new in s, failing the test for an
// old that s does not hold.
func rewrite(t *testing.T, name, s string, oldnew ...string) string {
	t.Helper()
	for i := 0; i < len(oldnew); i += 2 {
		if !strings.Contains(s, oldnew[i]) {
			t.Fatalf("docs/cluster/%s does not hold %q, which the tier rewrites", name, oldnew[i])
		}
	}
	return strings.NewReplacer(oldnew...).Replace(s)
}

// urls is every server's client URL, comma-separated.
func (r *rig) urls() string {
	var us []string
	for _, n := range r.nodes {
		us = append(us, n.url())
	}
	return strings.Join(us, ",")
}

func (r *rig) seed(role string) string { return r.creds.SeedFile(role) }

// startNode starts nats-server i on its config and waits until it
// answers on its monitoring port.
func (r *rig) startNode(i int) {
	t, n := r.t, r.nodes[i]
	n.proc = r.ps.Start(n.name, bins.natsServer, "-c", n.conf)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := httpc.Get(fmt.Sprintf("http://127.0.0.1:%d/varz", n.monitor))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if !n.proc.Running() || time.Now().After(deadline) {
			t.Fatalf("nats-server %s not up: %v (log %s)\n%s", n.name, err, n.proc.Log, proctest.Tail(n.proc.Log, 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// connect signs in to the cluster as role with a client that reconnects
// for ever.
func (r *rig) connect(name, role string) jetstream.JetStream {
	r.t.Helper()
	signIn, err := r.creds.Option(role)
	if err != nil {
		r.t.Fatal(err)
	}
	nc, err := nats.Connect(r.urls(), nats.Name(name), signIn, nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(nc.Close)
	js, err := jetlog.NewJetStream(nc)
	if err != nil {
		r.t.Fatal(err)
	}
	return js
}

// waitJetStream waits until the cluster answers JetStream requests (a
// meta leader is elected).
func (r *rig) waitJetStream() {
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := r.admin.AccountInfo(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("JetStream not available on the cluster: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startFerry starts ferry serve on the cluster as the docs say: three
// URLs, --replicas 3, the ferry user's seed, the publish account.
func (r *rig) startFerry(f *ferryProc) {
	args := []string{"serve", "--nats", r.urls(), "--replicas", "3",
		"--nats-nkey", r.seed(natsembed.RoleFerry), "--nats-publish-account",
		"--data", f.data, "--http", f.http,
		"--deal-size", "4MiB", "--min-payload", "16KiB", "--max-wait", "1s", "--tick", "200ms",
		"--deal-engine", "http://" + r.sim + "/offers", "--report-token", reportToken,
		// Reports reach whichever ferry is up, through the front.
		"--report-url", "http://" + r.front.addr + "/v1/deals/report",
		"--offer-retry", "1s", "--offer-backoff", "1s", "--piece-workers", "1",
		// The corpus is served on loopback, which the fetch policy refuses
		// unless told.
		"--fetch-allow", r.cars.Addr}
	f.runs++
	f.proc = r.ps.Start(f.name, bins.ferry, args...)
}

// leader is the ferry whose aggregator leads, waiting up to a minute for
// one to.
func (r *rig) leader(ctx context.Context) *ferryProc {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		for _, f := range r.ferry {
			if v, ok := proctest.Metric(f.http, "ferry_aggregator_leader"); ok && v == 1 {
				return f
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.t.Fatal("no ferry leads within a minute")
	return nil
}

// streamInfo asks the stream's leader about it.
func (r *rig) streamInfo(ctx context.Context, name string) (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := r.admin.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	return s.Info(ctx)
}

// streamLeader is the index of the server leading stream, waiting for
// one to be elected.
func (r *rig) streamLeader(ctx context.Context, stream string) int {
	deadline := time.Now().Add(30 * time.Second)
	var err error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var info *jetstream.StreamInfo
		if info, err = r.streamInfo(ctx, stream); err == nil && info.Cluster != nil {
			for i, n := range r.nodes {
				if n.name == info.Cluster.Leader {
					return i
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.t.Fatalf("no leader of %s: %v", stream, err)
	return -1
}

var httpc = &http.Client{Timeout: 5 * time.Second}

// serverHealth is nil when server i's GET /healthz answers 200: its
// JetStream, and every stream and consumer replica it holds, is current.
func (r *rig) serverHealth(i int) error {
	resp, err := httpc.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", r.nodes[i].monitor))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: /healthz %d %s", r.nodes[i].name, resp.StatusCode, bytes.TrimSpace(body))
	}
	return nil
}

// replica is server i's own copy of stream, from its /jsz.
func (r *rig) replica(i int, stream string) (server.StreamState, error) {
	resp, err := httpc.Get(fmt.Sprintf("http://127.0.0.1:%d/jsz?acc=%s&streams=true", r.nodes[i].monitor, account))
	if err != nil {
		return server.StreamState{}, err
	}
	defer resp.Body.Close()
	var info server.JSInfo
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return server.StreamState{}, err
	}
	for _, a := range info.AccountDetails {
		for _, s := range a.Streams {
			if s.Name == stream {
				return s.State, nil
			}
		}
	}
	return server.StreamState{}, fmt.Errorf("%s holds no replica of %s", r.nodes[i].name, stream)
}

// allCurrent is nil when every server is healthy and the stream's leader
// reports every replica of stream current.
func (r *rig) allCurrent(ctx context.Context, stream string) error {
	for i := range r.nodes {
		if err := r.serverHealth(i); err != nil {
			return err
		}
	}
	info, err := r.streamInfo(ctx, stream)
	if err != nil {
		return err
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return fmt.Errorf("%s has no leader", stream)
	}
	if len(info.Cluster.Replicas) != len(r.nodes)-1 {
		return fmt.Errorf("%s: the leader %s knows %d other replicas", stream, info.Cluster.Leader, len(info.Cluster.Replicas))
	}
	for _, p := range info.Cluster.Replicas {
		if !p.Current || p.Offline {
			return fmt.Errorf("%s: replica on %s not current (lag %d, offline %v, seen %s ago)", stream, p.Name, p.Lag, p.Offline, p.Active)
		}
	}
	return nil
}

// sameCopies is nil when the three servers' copies of stream hold the
// same messages: the same first and last sequence, count and bytes.
func (r *rig) sameCopies(stream string) error {
	var first server.StreamState
	for i := range r.nodes {
		st, err := r.replica(i, stream)
		if err != nil {
			return err
		}
		if i == 0 {
			first = st
			continue
		}
		if st.FirstSeq != first.FirstSeq || st.LastSeq != first.LastSeq || st.Msgs != first.Msgs || st.Bytes != first.Bytes {
			return fmt.Errorf("%s: %s holds %d–%d (%d messages, %d B), %s %d–%d (%d, %d B)", stream,
				r.nodes[0].name, first.FirstSeq, first.LastSeq, first.Msgs, first.Bytes,
				r.nodes[i].name, st.FirstSeq, st.LastSeq, st.Msgs, st.Bytes)
		}
	}
	return nil
}

// waitFor polls cond until it returns nil or timeout passes, and says how
// long it took; the test fails with cond's last error on a timeout.
func (r *rig) waitFor(ctx context.Context, timeout time.Duration, what string, cond func() error) time.Duration {
	r.t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			r.t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runFerry runs a ferry command to completion.
func runFerry(ctx context.Context, timeout time.Duration, args ...string) (string, error) {
	return proctest.Run(ctx, timeout, bins.ferry, args...)
}

// seqWatch follows FERRY_AGG's and FERRY_IN's last sequences as their
// stream leaders hold them, for the time from a kill to appends again.
type seqWatch struct {
	mu       sync.Mutex
	agg, in  uint64
	changed  chan struct{} // closed and replaced at each change
	failures atomic.Int64  // polls that got no answer
}

func watchSeqs(t *testing.T, js jetstream.JetStream) *seqWatch {
	w := &seqWatch{changed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			pctx, pcancel := context.WithTimeout(ctx, time.Second)
			agg, err1 := jetlog.LastSeq(pctx, js, jetlog.StreamAgg, "")
			in, err2 := jetlog.LastSeq(pctx, js, jetlog.StreamIn, "")
			pcancel()
			if err1 != nil || err2 != nil {
				w.failures.Add(1)
			}
			w.mu.Lock()
			if err1 == nil && agg > w.agg || err2 == nil && in > w.in {
				if err1 == nil {
					w.agg = max(w.agg, agg)
				}
				if err2 == nil {
					w.in = max(w.in, in)
				}
				close(w.changed)
				w.changed = make(chan struct{})
			}
			w.mu.Unlock()
			carload.SleepCtx(ctx, 50*time.Millisecond)
		}
	}()
	return w
}

// last is the latest sequences seen.
func (w *seqWatch) last() (agg, in uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.agg, w.in
}

// beyond waits until the aggregate log's last sequence passes agg, and
// returns when it did.
func (w *seqWatch) beyond(ctx context.Context, agg uint64) (time.Time, bool) {
	for {
		w.mu.Lock()
		cur, ch := w.agg, w.changed
		w.mu.Unlock()
		if cur > agg {
			return time.Now(), true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return time.Time{}, false
		}
	}
}

// healthLog polls every ferry's /healthz and keeps each answer other than
// 200, to say how long and why a ferry was unhealthy.
type healthLog struct {
	mu  sync.Mutex
	bad map[string][]healthSample // by ferry name
}

type healthSample struct {
	at     time.Time
	status int // 0: no answer (the process is down)
	body   string
}

func watchHealth(t *testing.T, fs []*ferryProc) *healthLog {
	h := &healthLog{bad: map[string][]healthSample{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	hc := &http.Client{Timeout: time.Second}
	for _, f := range fs {
		wg.Go(func() {
			for ctx.Err() == nil {
				s := healthSample{at: time.Now()}
				if resp, err := hc.Get("http://" + f.http + "/healthz"); err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					s.status, s.body = resp.StatusCode, strings.TrimSpace(string(b))
				}
				if s.status != http.StatusOK {
					h.mu.Lock()
					h.bad[f.name] = append(h.bad[f.name], s)
					h.mu.Unlock()
				}
				carload.SleepCtx(ctx, 100*time.Millisecond)
			}
		})
	}
	return h
}

// unhealthy is what ferry f answered other than 200 in [from, to): the
// span from the first such answer to the last, and the distinct answers.
func (h *healthLog) unhealthy(f string, from, to time.Time, answered bool) (time.Duration, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var first, last time.Time
	seen := map[string]bool{}
	var reasons []string
	for _, s := range h.bad[f] {
		if s.at.Before(from) || !s.at.Before(to) || (answered && s.status == 0) {
			continue
		}
		if first.IsZero() {
			first = s.at
		}
		last = s.at
		reason := fmt.Sprintf("%d %s", s.status, clip(s.body, 1))
		if s.status == 0 {
			reason = "no answer"
		}
		if !seen[reason] && len(reasons) < 6 {
			seen[reason] = true
			reasons = append(reasons, reason)
		}
	}
	if first.IsZero() {
		return 0, nil
	}
	return last.Sub(first) + 100*time.Millisecond, reasons
}

// front is what an operator puts before several ferries: one address for
// producers' POST /v1/cars and the deal engine's reports, passed to the
// first ferry that answers /healthz 200, or to any that is up.
type front struct {
	addr   string
	ferrys []*ferryProc
	hc     *http.Client
}

func newFront(t *testing.T, fs []*ferryProc) *front {
	f := &front{ferrys: fs, hc: &http.Client{Timeout: 30 * time.Second}}
	srv := &http.Server{Handler: f, ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return f
}

func (f *front) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var healthy, rest []string
	for _, fp := range f.ferrys {
		if ok, _ := proctest.Healthy(fp.http); ok {
			healthy = append(healthy, fp.http)
		} else {
			rest = append(rest, fp.http)
		}
	}
	lastErr := "no ferry"
	for _, addr := range append(healthy, rest...) {
		out, err := http.NewRequestWithContext(req.Context(), req.Method, "http://"+addr+req.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			lastErr = err.Error()
			continue
		}
		out.Header = req.Header.Clone()
		resp, err := f.hc.Do(out)
		if err != nil {
			lastErr = err.Error()
			continue
		}
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
		resp.Body.Close()
		return
	}
	http.Error(w, lastErr, http.StatusBadGateway)
}

func clip(s string, lines int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > lines {
		ls = append(ls[:lines], fmt.Sprintf("… %d more lines", len(ls)-lines))
	}
	return strings.Join(ls, "\n")
}
