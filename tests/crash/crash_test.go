//go:build crash

// Package crash kills ferry's processes with SIGKILL at random moments
// while events flow, restarts them on the same data, and then requires
// that every CAR reached DEAL_PROCESSED exactly once and that ferry audit
// finds every invariant intact.
//
//	make crash-test                                  # CI size: 2,000 events
//	CRASH_N=100000 CRASH_KILLS=20 make crash-test    # the full run
//
// Knobs (environment): CRASH_N, CRASH_KILLS, CRASH_NATS_KILLS, CRASH_SEED,
// CRASH_DEAL_SIZE, CRASH_MIN_PAYLOAD, CRASH_FAILURE_RATE, CRASH_PUBLISH,
// CRASH_CONVERGE, CRASH_PIECE_WORKERS, CRASH_LOGDIR (keep the processes'
// logs), CRASH_RACE=1 (build ferry with the race detector).
package crash

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/internal/carload"
	"github.com/ferry-dev/ferry/internal/proctest"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const reportToken = "crash-report-token"

// rig is one ferry under test: a deal engine simulator, ferry serve and,
// for the second scenario, a standalone NATS server.
type rig struct {
	t        *testing.T
	p        params
	ps       *proctest.Procs
	cars     *carload.Corpus
	rng      *rand.Rand
	dir      string
	httpAddr string
	natsPort int
	natsURL  string
	embedded bool // ferry serve embeds the NATS server
	simAddr  string
	serve    *proctest.Proc
	natsd    *proctest.Proc
	serves   int
}

func newRig(t *testing.T, p params, embedded bool) *rig {
	r := &rig{t: t, p: p, ps: proctest.New(t, os.Getenv("CRASH_LOGDIR")), rng: rand.New(rand.NewPCG(p.Seed, 7)), dir: t.TempDir(), embedded: embedded}
	r.httpAddr = fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	r.natsPort = proctest.FreePort(t)
	r.natsURL = fmt.Sprintf("nats://127.0.0.1:%d", r.natsPort)
	r.simAddr = fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	r.cars = carload.New(t, p.N, p.Seed, "crash")
	if err := os.MkdirAll(filepath.Join(r.dir, "sim"), 0o755); err != nil {
		t.Fatal(err)
	}
	r.ps.Start("spade-sim", bins.ferry, "spade-sim", "--listen", r.simAddr, "--report-token", reportToken,
		"--delay", "50ms", "--failure-rate", p.Failure, "--seed", strconv.FormatUint(p.Seed, 10),
		"--tmp", filepath.Join(r.dir, "sim"))
	return r
}

// startServe starts ferry serve and waits for /healthz.
func (r *rig) startServe() {
	r.t.Helper()
	r.spawnServe()
	proctest.WaitHealthy(r.t, r.serve, r.httpAddr, 90*time.Second)
}

// data is ferry serve's data dir; with the embedded server it holds the
// NATS users' seeds, which ferry's commands find through --data.
func (r *rig) data() string { return filepath.Join(r.dir, "data") }

// signIn is the option that signs a client in as role on the embedded
// server (none on the standalone one, which has no users).
func (r *rig) signIn(role string) []nats.Option {
	if !r.embedded {
		return nil
	}
	opt, err := nats.NkeyOptionFromSeed(filepath.Join(r.data(), "nats", role+".nk"))
	if err != nil {
		r.t.Fatal(err)
	}
	return []nats.Option{opt}
}

// spawnServe starts ferry serve on the rig's data dir and ports.
func (r *rig) spawnServe() {
	args := []string{"serve", "--data", r.data(), "--http", r.httpAddr,
		"--deal-size", r.p.DealSize, "--tick", "200ms", "--max-wait", "1s", "--min-payload", r.p.MinPayload,
		"--deal-engine", "http://" + r.simAddr + "/offers", "--report-token", reportToken, "--offer-retry", "1s",
		// The CARs of a failed deal go back after a second, not the
		// production 10m, so the run converges within its bound.
		"--offer-backoff", "1s",
		"--piece-workers", strconv.Itoa(r.p.Workers),
		// The corpus is served on loopback, which the fetch policy refuses
		// unless told.
		"--fetch-allow", r.cars.Addr}
	if r.embedded {
		args = append(args, "--nats-listen", fmt.Sprintf("127.0.0.1:%d", r.natsPort))
	} else {
		args = append(args, "--nats", r.natsURL)
	}
	r.serves++
	r.serve = r.ps.Start("serve", bins.ferry, args...)
}

// killServe SIGKILLs ferry serve, which must still be running: a ferry
// that died by itself is a failure.
func (r *rig) killServe() {
	r.t.Helper()
	if !r.serve.Running() {
		r.t.Fatalf("ferry serve exited by itself: %v\n%s", r.serve.Err(), proctest.Tail(r.serve.Log, 40))
	}
	r.serve.Kill()
}

func (r *rig) startNATS() {
	r.t.Helper()
	r.natsd = r.ps.Start("natsd", bins.natsd, "-listen", fmt.Sprintf("127.0.0.1:%d", r.natsPort),
		"-store", filepath.Join(r.dir, "natsd"))
	deadline := time.Now().Add(60 * time.Second)
	for {
		nc, err := nats.Connect(r.natsURL, nats.Timeout(time.Second))
		if err == nil {
			js, _ := jetstream.New(nc)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err = js.AccountInfo(ctx)
			cancel()
			nc.Close()
			if err == nil {
				return
			}
		}
		if !r.natsd.Running() || time.Now().After(deadline) {
			r.t.Fatalf("natsd not ready: %v (log %s)\n%s", err, r.natsd.Log, proctest.Tail(r.natsd.Log, 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *rig) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(r.rng.Int64N(int64(hi-lo)+1))
}

// TestServeKilled publishes N events while ferry serve (with its embedded
// NATS server) is killed with SIGKILL at random moments and restarted on
// the same data dir and ports.
func TestServeKilled(t *testing.T) {
	p := loadParams(t)
	ctx := proctest.Context(t)
	began := time.Now()
	r := newRig(t, p, true)
	r.startServe()
	prod := &carload.Producer{Events: r.cars.Events, NATSURL: r.natsURL, Opts: r.signIn("publish"), API: r.httpAddr, Duration: p.Publish, Logf: t.Logf}
	prodDone := make(chan error, 1)
	var published atomic.Bool
	go func() {
		err := prod.Run(ctx)
		published.Store(true)
		prodDone <- err
	}()

	// Kill at least p.Kills times, and for as long as events flow.
	killsStart, kills := time.Now(), 0
	for round := 0; kills < p.Kills || !published.Load(); round++ {
		stored := func() string { return fmt.Sprintf("%d/%d events stored", prod.Stored.Load(), p.N) }
		// The first rounds take each kind of moment once; then at random.
		u := r.rng.Float64()
		if round < 3 {
			u = []float64{0.9, 0.1, 0.3}[round]
		}
		switch {
		case u < 0.15:
			// During start-up: opening the store, rebuilding the fold,
			// catching up the read models.
			r.killServe()
			kills++
			r.spawnServe()
			delay := r.between(0, 700*time.Millisecond)
			carload.SleepCtx(ctx, delay)
			r.killServe()
			kills++
			t.Logf("kills %d-%d/%d: ferry serve SIGKILLed, restarted and SIGKILLed again %s into its start-up (%s)",
				kills-1, kills, p.Kills, delay.Round(time.Millisecond), stored())
		case u < 0.4:
			// Soon after /healthz, most likely a standby waiting out the
			// dead process's lease.
			delay := r.between(0, 3*time.Second)
			carload.SleepCtx(ctx, delay)
			_, seq := proctest.Healthy(r.httpAddr)
			r.killServe()
			kills++
			t.Logf("kill %d/%d: ferry serve SIGKILLed %s after /healthz (read models at aggregate log %d; %s)",
				kills, p.Kills, delay.Round(time.Millisecond), seq, stored())
		default:
			// A leading aggregator: folding, appending, offering,
			// computing pieces, publishing receipts.
			led := proctest.Leading(ctx, r.httpAddr, 30*time.Second)
			delay := r.between(100*time.Millisecond, 4*time.Second)
			carload.SleepCtx(ctx, delay)
			_, seq := proctest.Healthy(r.httpAddr)
			r.killServe()
			kills++
			t.Logf("kill %d/%d: ferry serve SIGKILLed %s after it led (led: %v; read models at aggregate log %d; %s)",
				kills, p.Kills, delay.Round(time.Millisecond), led, seq, stored())
		}
		if ctx.Err() != nil {
			t.Fatalf("out of time after %d kills", kills)
		}
		if r.rng.Float64() < 0.3 {
			carload.SleepCtx(ctx, r.between(0, time.Second))
		}
		r.startServe()
	}
	t.Logf("%d kills in %s", kills, time.Since(killsStart).Round(time.Millisecond))
	waitProducer(t, ctx, prodDone, prod)
	r.finish(ctx, began)
}

// TestNATSKilled runs ferry serve against a standalone NATS server and
// kills the NATS server underneath it with SIGKILL while events flow.
func TestNATSKilled(t *testing.T) {
	p := loadParams(t)
	ctx := proctest.Context(t)
	began := time.Now()
	r := newRig(t, p, false)
	r.startNATS()
	r.startServe()
	prod := &carload.Producer{Events: r.cars.Events, NATSURL: r.natsURL, Opts: r.signIn("publish"), API: r.httpAddr, Duration: p.Publish, Logf: t.Logf}
	prodDone := make(chan error, 1)
	go func() { prodDone <- prod.Run(ctx) }()

	killsStart := time.Now()
	for k := 1; k <= p.NATSKills; k++ {
		if r.rng.Float64() < 0.6 {
			proctest.Leading(ctx, r.httpAddr, 45*time.Second)
		}
		delay := r.between(500*time.Millisecond, 6*time.Second)
		carload.SleepCtx(ctx, delay)
		if ctx.Err() != nil {
			t.Fatalf("out of time after %d NATS kills", k-1)
		}
		r.natsd.Kill()
		down := r.between(0, 2*time.Second)
		t.Logf("NATS kill %d/%d: natsd SIGKILLed, down for %s (%d/%d events stored)",
			k, p.NATSKills, down.Round(time.Millisecond), prod.Stored.Load(), p.N)
		carload.SleepCtx(ctx, down)
		r.startNATS()
		if !r.serve.Running() {
			t.Fatalf("ferry serve exited when NATS went away: %v\n%s", r.serve.Err(), proctest.Tail(r.serve.Log, 40))
		}
	}
	t.Logf("%d NATS kills in %s", p.NATSKills, time.Since(killsStart).Round(time.Millisecond))
	waitProducer(t, ctx, prodDone, prod)
	r.finish(ctx, began)
}

func waitProducer(t *testing.T, ctx context.Context, done <-chan error, prod *carload.Producer) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("producer: %v", err)
		}
	case <-ctx.Done():
		t.Fatalf("producer did not finish: %d/%d stored", prod.Stored.Load(), len(prod.Events))
	}
}

// finish re-publishes a sample with ferry publish --file, waits until every
// CAR is DEAL_PROCESSED, runs ferry audit, asks the API about every CAR and
// stops ferry serve cleanly.
func (r *rig) finish(ctx context.Context, began time.Time) {
	t, p := r.t, r.p
	if !r.serve.Running() {
		t.Fatalf("ferry serve exited: %v\n%s", r.serve.Err(), proctest.Tail(r.serve.Log, 40))
	}

	// A producer that lost track re-publishes: duplicates, never new CARs.
	lines := filepath.Join(r.dir, "republish.jsonl")
	r.cars.WriteLines(t, lines, 500)
	out, err := runFerry(ctx, 2*time.Minute, "publish", "--server", r.httpAddr, "--file", lines)
	t.Logf("ferry publish --file (re-publish of %d events): %s", min(500, p.N), strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("ferry publish --file: %v", err)
	}

	convergeStart := time.Now()
	deadline := convergeStart.Add(p.Converge)
	var tl carload.Tally
	lastLog, lastIngesting, ingestingSince := time.Time{}, uint64(0), time.Now()
	for {
		tl, err = carload.ListTally(ctx, r.httpAddr)
		if err == nil {
			done := tl.Cars[aggregator.DealProcessed]
			if done > p.N {
				t.Fatalf("%d CARs in DEAL_PROCESSED aggregates, only %d were published: %s", done, p.N, tl)
			}
			if done == p.N {
				break
			}
			if tl.Ingesting != lastIngesting {
				lastIngesting, ingestingSince = tl.Ingesting, time.Now()
			} else if tl.Ingesting != 0 && time.Since(ingestingSince) > 10*time.Second {
				out, err := runFerry(ctx, 30*time.Second, "aggregates", "--server", r.httpAddr, "close", strconv.FormatUint(tl.Ingesting, 10))
				t.Logf("aggregate %d INGESTING for %s: ferry aggregates close: %s %v", tl.Ingesting,
					time.Since(ingestingSince).Round(time.Second), strings.TrimSpace(out), err)
				ingestingSince = time.Now()
			}
		}
		if time.Since(lastLog) > 15*time.Second {
			lastLog = time.Now()
			queued, _ := proctest.Metric(r.httpAddr, "ferry_cars_queued")
			t.Logf("converging %s: %s; queued %v; CAR fetches %d; list err %v", time.Since(convergeStart).Round(time.Second),
				tl, queued, r.cars.Fetches.Load(), err)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			r.diagnose()
			t.Fatalf("not every CAR DEAL_PROCESSED within %s: %s", p.Converge, tl)
		}
		if !r.serve.Running() {
			t.Fatalf("ferry serve exited: %v\n%s", r.serve.Err(), proctest.Tail(r.serve.Log, 40))
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("all %d CARs DEAL_PROCESSED %s after the crashes ended (%s): %s", p.N,
		time.Since(convergeStart).Round(time.Millisecond), "CAR fetches "+strconv.FormatInt(r.cars.Fetches.Load(), 10), tl)

	// Receipts and read models trail the aggregate log by moments.
	js := connect(t, r.natsURL, r.signIn("admin")...)
	caught := time.Now().Add(2 * time.Minute)
	for {
		aggLast, _, err1 := streamState(ctx, js, jetlog.StreamAgg)
		_, receipts, err2 := streamState(ctx, js, jetlog.StreamReceipts)
		_, seq := proctest.Healthy(r.httpAddr)
		if err1 == nil && err2 == nil && seq == aggLast && receipts >= uint64(p.N) {
			t.Logf("aggregate log at %d, read models at %d, %d receipts", aggLast, seq, receipts)
			break
		}
		if time.Now().After(caught) {
			t.Fatalf("read models or receipts behind: aggregate log %d (%v), read models %d, receipts %d (%v)", aggLast, err1, seq, receipts, err2)
		}
		time.Sleep(200 * time.Millisecond)
	}

	auditStart := time.Now()
	out, err = runFerry(ctx, 20*time.Minute, "audit", "--nats", r.natsURL, "--data", r.data(), "--server", r.httpAddr,
		"--deal-size", p.DealSize, "--max-wait", "1s", "--min-payload", p.MinPayload)
	t.Logf("ferry audit (%s):\n%s", time.Since(auditStart).Round(time.Millisecond), clip(out, 60))
	if err != nil {
		t.Errorf("ferry audit: %v", err)
	}

	checkStart := time.Now()
	carload.CheckCars(t, ctx, r.httpAddr, r.cars.Events)
	t.Logf("checked %d CARs over the API in %s", p.N, time.Since(checkStart).Round(time.Millisecond))

	if err := r.serve.Stop(30 * time.Second); err != nil {
		t.Errorf("ferry serve did not stop cleanly on SIGTERM: %v\n%s", err, proctest.Tail(r.serve.Log, 30))
	}
	t.Logf("done in %s (%d starts of ferry serve)", time.Since(began).Round(time.Millisecond), r.serves)
}

// diagnose logs what a stuck run looks like from outside.
func (r *rig) diagnose() {
	t := r.t
	for _, m := range []string{"ferry_cars_queued", "ferry_ingesting_cars", "ferry_aggregator_leader", "ferry_projection_seq", "ferry_aggregate_log_seq"} {
		v, ok := proctest.Metric(r.httpAddr, m)
		t.Logf("metric %s = %v (%v)", m, v, ok)
	}
	ok, seq := proctest.Healthy(r.httpAddr)
	t.Logf("healthz ok=%v aggregateLogSeq=%d", ok, seq)
	if out, err := runFerry(context.Background(), 30*time.Second, "aggregates", "--server", r.httpAddr, "--limit", "10000"); err == nil {
		var stuck []string
		for _, l := range strings.Split(out, "\n") {
			if l != "" && !strings.Contains(l, aggregator.DealProcessed) && !strings.Contains(l, aggregator.DealFailed) {
				stuck = append(stuck, l)
			}
		}
		t.Logf("aggregates not DEAL_PROCESSED/DEAL_FAILED:\n%s", clip(strings.Join(stuck, "\n"), 40))
	}
	var errs []string
	for _, l := range strings.Split(proctest.Tail(r.serve.Log, 100000), "\n") {
		if strings.Contains(l, "level=ERROR") {
			errs = append(errs, l)
		}
	}
	t.Logf("ferry serve ERROR lines (%d, last 20):\n%s", len(errs), strings.Join(errs[max(0, len(errs)-20):], "\n"))
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + r.simAddr + "/offers"); err == nil {
		var b strings.Builder
		buf := make([]byte, 64<<10)
		n, _ := resp.Body.Read(buf)
		b.Write(buf[:n])
		resp.Body.Close()
		t.Logf("spade-sim offers (start): %s", clip(b.String(), 60))
	}
	if out, err := runFerry(context.Background(), 30*time.Second, "dlq", "--nats", r.natsURL, "--data", r.data(), "list"); err == nil || out != "" {
		t.Logf("ferry dlq list: %s", clip(out, 20))
	}
}

func clip(s string, lines int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > lines {
		ls = append(ls[:lines], fmt.Sprintf("… %d more lines", len(ls)-lines))
	}
	return strings.Join(ls, "\n")
}
