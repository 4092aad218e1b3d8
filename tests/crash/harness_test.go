//go:build crash

package crash

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/api"
	"github.com/ferry-dev/ferry/client"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/proctest"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// bins are the binaries built once for every test of the package.
var bins struct {
	ferry, natsd string
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ferry-crash-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		bins.ferry = filepath.Join(dir, "ferry")
		bins.natsd = filepath.Join(dir, "natsd")
		flags := []string{"-tags", "crash"}
		if os.Getenv("CRASH_RACE") == "1" {
			flags = append(flags, "-race")
		}
		for _, b := range []struct{ out, pkg string }{{bins.ferry, "./cmd/ferry"}, {bins.natsd, "./tests/crash/natsd"}} {
			if err := proctest.Build(b.out, b.pkg, flags...); err != nil {
				fmt.Fprintln(os.Stderr, "crash:", err)
				return 1
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

// params are the knobs of a run, from the environment.
type params struct {
	N          int           // CRASH_N: events (CARs)
	Kills      int           // CRASH_KILLS: SIGKILLs of ferry serve
	NATSKills  int           // CRASH_NATS_KILLS: SIGKILLs of the NATS server
	Seed       uint64        // CRASH_SEED
	DealSize   string        // CRASH_DEAL_SIZE
	MinPayload string        // CRASH_MIN_PAYLOAD
	Failure    string        // CRASH_FAILURE_RATE of the deal engine
	Publish    time.Duration // CRASH_PUBLISH: how long publishing is spread over
	Converge   time.Duration // CRASH_CONVERGE: bound on reaching DEAL_PROCESSED after the crashes
	Workers    int           // CRASH_PIECE_WORKERS
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v >= 0 {
		return v
	}
	return def
}

func envDur(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envStr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func loadParams(t *testing.T) params {
	p := params{
		N:          envInt("CRASH_N", 2000),
		Kills:      envInt("CRASH_KILLS", 10),
		NATSKills:  envInt("CRASH_NATS_KILLS", 5),
		DealSize:   envStr("CRASH_DEAL_SIZE", "4MiB"),
		MinPayload: envStr("CRASH_MIN_PAYLOAD", "16KiB"),
		Failure:    envStr("CRASH_FAILURE_RATE", "0.05"),
		Workers:    envInt("CRASH_PIECE_WORKERS", 2),
	}
	p.Seed = uint64(time.Now().UnixNano())
	if s, err := strconv.ParseUint(os.Getenv("CRASH_SEED"), 10, 64); err == nil {
		p.Seed = s
	}
	p.Publish = envDur("CRASH_PUBLISH", 45*time.Second)
	p.Converge = envDur("CRASH_CONVERGE", 5*time.Minute+time.Duration(p.N)*5*time.Millisecond)
	t.Logf("params: N=%d kills=%d natsKills=%d seed=%d (CRASH_SEED) deal=%s minPayload=%s failureRate=%s publish=%s converge=%s",
		p.N, p.Kills, p.NATSKills, p.Seed, p.DealSize, p.MinPayload, p.Failure, p.Publish, p.Converge)
	return p
}

// freePort picks a loopback port that is free now.
// corpus is N real CARs served over HTTP from the test process, so they
// stay reachable while ferry is down, and their car.replicated events
// (without pieces: ferry's piece workers fetch and compute every one).
type corpus struct {
	evs     []*events.CarReplicated
	byName  map[string][]byte
	base    string
	addr    string // host:port of the server, on loopback
	fetches atomic.Int64
	srv     *http.Server
}

// newCorpus makes n CARs of 200 bytes to 4 KiB from seed and serves them.
func newCorpus(t *testing.T, n int, seed uint64) *corpus {
	t.Helper()
	start := time.Now()
	cars := make([]testutil.CAR, n)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				r := rand.New(rand.NewPCG(seed, uint64(i)))
				c, err := testutil.NewCAR(seed^uint64(i)*0x9e3779b97f4a7c15, 200+r.IntN(4096-200))
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				cars[i] = c
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &corpus{byName: make(map[string][]byte, n), base: "http://" + ln.Addr().String() + "/cars", addr: ln.Addr().String()}
	seen := map[string]bool{}
	for i, car := range cars {
		name := car.CID.String()
		if seen[name] {
			t.Fatalf("CAR %d repeats %s", i, name)
		}
		seen[name] = true
		c.byName[name+".car"] = car.Bytes
		ev := car.Event(c.base, false)
		ev.Source = json.RawMessage(fmt.Sprintf(`{"crash":%d}`, i))
		c.evs = append(c.evs, ev)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /cars/{name}", func(w http.ResponseWriter, r *http.Request) {
		b, ok := c.byName[r.PathValue("name")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		c.fetches.Add(1)
		w.Header().Set("Content-Type", "application/vnd.ipld.car")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		_, _ = w.Write(b)
	})
	c.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = c.srv.Serve(ln) }()
	t.Cleanup(func() { _ = c.srv.Close() })
	t.Logf("corpus: %d CARs made in %s, served at %s", n, time.Since(start).Round(time.Millisecond), c.base)
	return c
}

// writeLines stores the events as JSON lines, for ferry publish --file.
func (c *corpus) writeLines(t *testing.T, path string, n int) {
	t.Helper()
	var buf bytes.Buffer
	for _, ev := range c.evs[:min(n, len(c.evs))] {
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// producer publishes every event until each one is stored, as a real
// producer must: a publish that fails or times out (ferry or NATS down)
// is retried, and a retry of a stored event is a duplicate, never a second
// CAR. Every fourth chunk goes through POST /v1/cars instead of NATS.
type producer struct {
	evs      []*events.CarReplicated
	natsURL  string
	opts     []nats.Option // sign-in
	api      string        // ferry's HTTP address; "" sends everything on NATS
	duration time.Duration
	logf     func(string, ...any)

	stored                          atomic.Int64
	viaNATS, viaHTTP, dups, retries atomic.Int64
}

func (p *producer) run(ctx context.Context) error {
	nc, err := nats.Connect(p.natsURL, append([]nats.Option{nats.Name("crash producer"), nats.MaxReconnects(-1),
		nats.ReconnectWait(100 * time.Millisecond), nats.RetryOnFailedConnect(true), nats.ReconnectBufSize(-1),
		nats.NoCallbacksAfterClientClose()}, p.opts...)...)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(512), jetstream.WithPublishAsyncTimeout(5*time.Second))
	if err != nil {
		return err
	}
	pub := jetlog.NewPublisher(js, jetlog.DefaultSubjects)
	api := client.NewHTTP(p.api)
	api.HC = &http.Client{Timeout: 15 * time.Second}

	chunk := max(20, min(500, len(p.evs)/100))
	chunks := (len(p.evs) + chunk - 1) / chunk
	interval := p.duration / time.Duration(max(chunks, 1))
	start := time.Now()
	lastLog := start
	for k := 0; k*chunk < len(p.evs); k++ {
		evs := p.evs[k*chunk : min((k+1)*chunk, len(p.evs))]
		viaHTTP := p.api != "" && k%4 == 3
		for attempt := 0; len(evs) > 0; attempt++ {
			if ctx.Err() != nil {
				return fmt.Errorf("stopped with %d of %d events stored: %w", p.stored.Load(), len(p.evs), ctx.Err())
			}
			if attempt > 0 {
				p.retries.Add(1)
				sleepCtx(ctx, 250*time.Millisecond)
			}
			var left []*events.CarReplicated
			if viaHTTP {
				left = p.postHTTP(ctx, api, evs)
			} else {
				left = p.publishNATS(ctx, pub, evs)
			}
			evs = left
		}
		if time.Since(lastLog) > 10*time.Second {
			lastLog = time.Now()
			p.logf("producer: %d/%d stored (nats %d, http %d, duplicate %d, retried chunks %d)",
				p.stored.Load(), len(p.evs), p.viaNATS.Load(), p.viaHTTP.Load(), p.dups.Load(), p.retries.Load())
		}
		sleepCtx(ctx, time.Until(start.Add(time.Duration(k+1)*interval)))
	}
	p.logf("producer: all %d events stored in %s (nats %d, http %d, duplicate %d, retried chunks %d)",
		len(p.evs), time.Since(start).Round(time.Millisecond), p.viaNATS.Load(), p.viaHTTP.Load(), p.dups.Load(), p.retries.Load())
	return nil
}

// publishNATS publishes evs asynchronously and returns those not stored.
func (p *producer) publishNATS(ctx context.Context, pub *jetlog.Publisher, evs []*events.CarReplicated) []*events.CarReplicated {
	type sent struct {
		ev  *events.CarReplicated
		fut jetstream.PubAckFuture
	}
	var left []*events.CarReplicated
	var futs []sent
	for _, ev := range evs {
		fut, err := pub.PublishAsync(ev)
		if err != nil {
			left = append(left, ev)
			continue
		}
		futs = append(futs, sent{ev, fut})
	}
	for _, s := range futs {
		select {
		case ack := <-s.fut.Ok():
			p.stored.Add(1)
			p.viaNATS.Add(1)
			if ack.Duplicate {
				p.dups.Add(1)
			}
		case <-s.fut.Err():
			left = append(left, s.ev)
		case <-ctx.Done():
			return append(left, s.ev)
		}
	}
	return left
}

// postHTTP submits evs in one POST /v1/cars and returns those not stored.
func (p *producer) postHTTP(ctx context.Context, api *client.HTTP, evs []*events.CarReplicated) []*events.CarReplicated {
	res, err := api.Submit(ctx, evs)
	if err != nil || len(res) != len(evs) {
		return evs
	}
	var left []*events.CarReplicated
	for i, r := range res {
		switch r.Status {
		case wire.Accepted, wire.Duplicate:
			p.stored.Add(1)
			p.viaHTTP.Add(1)
			if r.Status == wire.Duplicate {
				p.dups.Add(1)
			}
		case wire.Rejected:
			// A valid event refused is a bug; keep retrying so the final
			// count shows it, and say so.
			p.logf("producer: POST /v1/cars refused %s: %s", evs[i].Car, r.Reason)
			left = append(left, evs[i])
		default:
			left = append(left, evs[i])
		}
	}
	return left
}

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

var httpc = &http.Client{Timeout: 5 * time.Second}

// metric reads one unlabelled gauge of GET /metrics.
func metric(addr, name string) (float64, bool) {
	resp, err := httpc.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// leading waits up to timeout for the aggregator of the process at addr
// to lead.
func leading(ctx context.Context, addr string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if v, ok := metric(addr, "ferry_aggregator_leader"); ok && v == 1 {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// tally is the aggregates listing summed by state.
type tally struct {
	cars      map[string]int // CARs per aggregate state
	aggs      map[string]int // aggregates per state
	ingesting uint64         // id of the INGESTING aggregate, 0 if none
}

func (t tally) String() string {
	return fmt.Sprintf("aggregates %v, CARs by aggregate state %v", t.aggs, t.cars)
}

func listTally(ctx context.Context, addr string) (tally, error) {
	c := client.NewHTTP(addr)
	c.HC = &http.Client{Timeout: 30 * time.Second}
	tl := tally{cars: map[string]int{}, aggs: map[string]int{}}
	var after uint64
	for {
		page, err := c.Aggregates(ctx, "", after, api.MaxPageLimit)
		if err != nil {
			return tl, err
		}
		for _, a := range page.Aggregates {
			tl.cars[a.State] += a.Count
			tl.aggs[a.State]++
			if a.State == aggregator.Ingesting {
				tl.ingesting = a.ID
			}
			after = a.ID
		}
		if len(page.Aggregates) < api.MaxPageLimit {
			return tl, nil
		}
	}
}

// run runs the ferry binary to completion and returns its output.
func runFerry(ctx context.Context, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.ferry, args...)
	cmd.Env = proctest.CleanEnv()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// streamLast is a stream's last sequence and message count.
func streamState(ctx context.Context, js jetstream.JetStream, name string) (last, msgs uint64, err error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return 0, 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, 0, err
	}
	return info.State.LastSeq, info.State.Msgs, nil
}

// connect opens a client that reconnects for ever.
func connect(t *testing.T, url string, signIn ...nats.Option) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, append([]nats.Option{nats.Name("crash test"), nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond),
		nats.RetryOnFailedConnect(true)}, signIn...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// checkCars asks the API for every CAR and requires DEAL_PROCESSED with
// an inclusion proof and deals.
func checkCars(t *testing.T, ctx context.Context, addr string, evs []*events.CarReplicated) {
	t.Helper()
	c := client.NewHTTP(addr)
	c.HC = &http.Client{Timeout: 30 * time.Second}
	var bad atomic.Int64
	var mu sync.Mutex
	var examples []string
	jobs := make(chan *events.CarReplicated)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for ev := range jobs {
				v, err := c.Car(ctx, ev.Car)
				problem := ""
				switch {
				case err != nil:
					problem = err.Error()
				case v.State != aggregator.DealProcessed:
					problem = fmt.Sprintf("state %s (aggregate %d, reason %q)", v.State, v.Aggregate, v.Reason)
				case v.Aggregate == 0 || v.Inclusion == nil || len(v.Deals) == 0 || v.Position == nil:
					problem = fmt.Sprintf("DEAL_PROCESSED without aggregate, position, proof or deals: %+v", v)
				}
				if problem != "" {
					bad.Add(1)
					mu.Lock()
					if len(examples) < 10 {
						examples = append(examples, ev.Car+": "+problem)
					}
					mu.Unlock()
				}
			}
		})
	}
	for _, ev := range evs {
		jobs <- ev
	}
	close(jobs)
	wg.Wait()
	if n := bad.Load(); n > 0 {
		t.Errorf("%d of %d CARs are not DEAL_PROCESSED with a proof and deals, e.g.\n  %s", n, len(evs), strings.Join(examples, "\n  "))
	}
}
