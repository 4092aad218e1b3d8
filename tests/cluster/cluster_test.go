//go:build cluster

// Package cluster runs ferry as an operator runs it on a NATS cluster:
// three nats-server processes started from the configuration files of
// docs/cluster (addresses and store dirs rewritten to loopback), the
// accounts and users of docs/operations.md#nats, two ferry serve
// --replicas 3 behind a front (the load balancer an operator puts before
// them), a deal engine simulator, and CARs published throughout. While
// they flow it SIGKILLs, one scenario after the other, the server leading
// FERRY_IN, the server leading FERRY_AGG (restarted 10 s later, then every
// replica must be current again), the leading ferry, and a server that
// leads neither log, and takes the server leading FERRY_AGG out in lame
// duck mode and back, as a rolling upgrade does. After each it requires
// every CAR DEAL_PROCESSED, the servers' copies of the logs alike, ferry
// audit's ok through every ferry, every ferry's read models to answer
// alike for every CAR, /healthz 200 throughout from every ferry not
// killed, and no server log saying a copy stopped applying the log.
//
//	make cluster-test                      # CI size: 320 CARs
//	CLUSTER_N=3000 make cluster-test       # the size
//
// Knobs (environment): CLUSTER_N, CLUSTER_FERRIES, CLUSTER_ROUNDS, CLUSTER_SEED,
// CLUSTER_PUBLISH, CLUSTER_CONVERGE, CLUSTER_CURRENT, CLUSTER_LOGDIR (keep
// the processes' logs), CLUSTER_RACE=1 (build ferry with the race
// detector). The times it logs (kill → appends again, kill → replicas
// current) are observations: it asserts correctness, and bounds only
// what would otherwise hang.
package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/carload"
	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/internal/proctest"
	"github.com/ferry-dev/ferry/jetlog"
)

// scenario is one fault, made while a share of the CARs is published.
type scenario struct {
	name string
	kill func(r *rig, ctx context.Context, round *round)
}

// round is one scenario's run: its CARs, its producer, and when the fault
// was made.
type round struct {
	evs    []*events.CarReplicated
	prod   *carload.Producer
	done   chan error
	start  time.Time
	killed time.Time
	// killedFerry is the ferry the scenario killed, if it killed one.
	killedFerry *ferryProc
}

func TestCluster(t *testing.T) {
	p := loadParams(t)
	ctx := proctest.Context(t)
	began := time.Now()
	r := newRig(t, p)
	t.Cleanup(func() { r.checkServerLogs(t) })
	t.Logf("cluster up in %s: servers %s, ferries %s", time.Since(began).Round(time.Millisecond), r.urls(), r.ferryAddrs())

	scenarios := []scenario{
		{"the server leading FERRY_IN is SIGKILLed", killStreamLeader(jetlog.StreamIn, 3*time.Second)},
		{"the server leading FERRY_AGG is SIGKILLed and restarted 10 s later", killStreamLeader(jetlog.StreamAgg, 10*time.Second)},
		{"the leading ferry is SIGKILLed and restarted", killLeadingFerry},
		{"a server that leads neither log is SIGKILLed", killOtherServer},
		{"the server leading FERRY_AGG leaves in lame duck mode and comes back, as in a rolling upgrade", lameDuck},
	}
	// CLUSTER_ROUNDS repeats the scenarios, for the failover figures of
	// docs/benchmarks.md (median and worst over several kills of each).
	base := scenarios
	for range p.Rounds - 1 {
		scenarios = append(scenarios, base...)
	}
	per := max(1, p.N/len(scenarios))
	for k, sc := range scenarios {
		evs := r.cars.Events[k*per : min((k+1)*per, len(r.cars.Events))]
		if k == len(scenarios)-1 {
			evs = r.cars.Events[k*per:]
		}
		ok := t.Run(sc.name, func(t *testing.T) {
			r.t = t
			defer func() { r.t = nil }()
			rd := r.publish(ctx, evs)
			sc.kill(r, ctx, rd)
			r.finish(ctx, rd, k*per+len(evs))
		})
		if !ok {
			t.Fatalf("stopped after %q failed", sc.name)
		}
	}
	r.t = t
	for _, f := range r.ferry {
		if err := f.proc.Stop(30 * time.Second); err != nil {
			t.Errorf("%s did not stop cleanly on SIGTERM: %v\n%s", f.name, err, proctest.Tail(f.proc.Log, 30))
		}
	}
	t.Logf("done in %s", time.Since(began).Round(time.Millisecond))
}

func (r *rig) ferryAddrs() string {
	var as []string
	for _, f := range r.ferry {
		as = append(as, f.name+"="+f.http)
	}
	return strings.Join(as, " ")
}

// publish starts publishing evs over the scenario's publish time, on NATS
// as the publish user and through the front, and waits until a quarter
// of them is stored and the aggregate log moves.
func (r *rig) publish(ctx context.Context, evs []*events.CarReplicated) *round {
	signIn, err := r.creds.Option(natsembed.RolePublish)
	if err != nil {
		r.t.Fatal(err)
	}
	rd := &round{evs: evs, done: make(chan error, 1), start: time.Now()}
	rd.prod = &carload.Producer{Events: evs, NATSURL: r.urls(), Opts: nil, API: r.front.addr, Duration: r.p.Publish, Logf: r.t.Logf}
	rd.prod.Opts = append(rd.prod.Opts, signIn)
	agg, _ := r.aggs.last()
	go func() { rd.done <- rd.prod.Run(ctx) }()
	r.waitFor(ctx, time.Minute, "a quarter of the CARs stored and appends under way", func() error {
		if n := rd.prod.Stored.Load(); n < int64(len(evs)/4) {
			return fmt.Errorf("%d of %d stored", n, len(evs))
		}
		if now, _ := r.aggs.last(); now <= agg {
			return fmt.Errorf("the aggregate log stands at %d", now)
		}
		return nil
	})
	return rd
}

// appending waits for an append to the aggregate log, so that a kill
// right after it lands while appends are in flight.
func (r *rig) appending(ctx context.Context) uint64 {
	agg, _ := r.aggs.last()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, ok := r.aggs.beyond(wctx, agg); !ok {
		r.t.Fatalf("no append to the aggregate log within 30 s (it stands at %d)", agg)
	}
	agg, _ = r.aggs.last()
	return agg
}

// resumed logs how long after the kill the aggregate log grew past agg.
func (r *rig) resumed(ctx context.Context, rd *round, agg uint64, what string) time.Time {
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	at, ok := r.aggs.beyond(wctx, agg)
	if !ok {
		r.t.Fatalf("no append to the aggregate log within a minute of %s (it stood at %d)", what, agg)
	}
	r.t.Logf("observed: kill → appends again (aggregate log past %d): %s (%s)", agg, at.Sub(rd.killed).Round(10*time.Millisecond), what)
	return at
}

// elected watches stream from the moment its leader old was killed and
// sends when another server reports itself its leader: the cluster's
// own election time, which the stream's failover is measured against.
func (r *rig) elected(ctx context.Context, stream, old string) <-chan time.Time {
	ch := make(chan time.Time, 1)
	go func() {
		defer close(ch)
		for ctx.Err() == nil {
			ictx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
			info, err := r.streamInfo(ictx, stream)
			cancel()
			if err == nil && info.Cluster != nil && info.Cluster.Leader != "" && info.Cluster.Leader != old {
				ch <- time.Now()
				return
			}
			carload.SleepCtx(ctx, 50*time.Millisecond)
		}
	}()
	return ch
}

// killStreamLeader SIGKILLs the server leading stream while appends are
// in flight and starts it again down later on its store, then waits for
// every replica of the stream to be current.
func killStreamLeader(stream string, down time.Duration) func(*rig, context.Context, *round) {
	return func(r *rig, ctx context.Context, rd *round) {
		i := r.streamLeader(ctx, stream)
		n := r.nodes[i]
		agg := r.appending(ctx)
		n.proc.Kill()
		rd.killed = time.Now()
		r.t.Logf("%s, leader of %s, SIGKILLed (aggregate log at %d, %d/%d CARs stored)", n.name, stream, agg, rd.prod.Stored.Load(), len(rd.evs))
		election := r.elected(ctx, stream, n.name)
		at := r.resumed(ctx, rd, agg, n.name+" down")
		if e, ok := <-election; ok {
			r.t.Logf("observed: kill → %s elected a leader: %s; appends again %s after the election", stream, e.Sub(rd.killed).Round(10*time.Millisecond), at.Sub(e).Round(10*time.Millisecond))
		}
		if nl := r.streamLeader(ctx, stream); nl == i {
			r.t.Fatalf("%s leads %s again while it is down", n.name, stream)
		} else {
			r.t.Logf("%s now leads %s", r.nodes[nl].name, stream)
		}
		carload.SleepCtx(ctx, time.Until(rd.killed.Add(down)))
		r.restartCurrent(ctx, rd, i, stream)
	}
}

// killLeadingFerry SIGKILLs the ferry whose aggregator leads, while it
// appends, and starts it again a moment later, as a standby.
func killLeadingFerry(r *rig, ctx context.Context, rd *round) {
	f := r.leader(ctx)
	r.appending(ctx)
	f.proc.Kill()
	rd.killed, rd.killedFerry = time.Now(), f
	// An append the dead ferry sent just before may still be stored: the
	// appends that count are those after what the log holds now.
	carload.SleepCtx(ctx, 100*time.Millisecond)
	agg, err := jetlog.LastSeq(ctx, r.admin, jetlog.StreamAgg, "")
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Logf("%s, the leading ferry, SIGKILLed (aggregate log at %d, %d/%d CARs stored)", f.name, agg, rd.prod.Stored.Load(), len(rd.evs))
	r.resumed(ctx, rd, agg, f.name+" down")
	next := r.leader(ctx)
	r.t.Logf("%s leads now", next.name)
	carload.SleepCtx(ctx, time.Until(rd.killed.Add(2*time.Second)))
	r.startFerry(f)
	proctest.WaitHealthy(r.t, f.proc, f.http, 2*time.Minute)
	r.t.Logf("%s restarted and healthy %s after the kill", f.name, time.Since(rd.killed).Round(time.Millisecond))
}

// killOtherServer SIGKILLs a server that leads neither FERRY_IN nor
// FERRY_AGG (clients and consumers on it move to the others) and starts
// it again 5 s later.
func killOtherServer(r *rig, ctx context.Context, rd *round) {
	in, agg := r.streamLeader(ctx, jetlog.StreamIn), r.streamLeader(ctx, jetlog.StreamAgg)
	// Of three servers, at least one leads neither.
	i := 0
	for i == in || i == agg {
		i++
	}
	n := r.nodes[i]
	at := r.appending(ctx)
	n.proc.Kill()
	rd.killed = time.Now()
	r.t.Logf("%s SIGKILLed (FERRY_IN led by %s, FERRY_AGG by %s; aggregate log at %d, %d/%d CARs stored)",
		n.name, r.nodes[in].name, r.nodes[agg].name, at, rd.prod.Stored.Load(), len(rd.evs))
	r.resumed(ctx, rd, at, n.name+" down")
	carload.SleepCtx(ctx, time.Until(rd.killed.Add(5*time.Second)))
	r.restartCurrent(ctx, rd, i, jetlog.StreamIn, jetlog.StreamAgg)
}

// restartCurrent starts server i again and waits until every server is
// healthy and every replica of streams current.
func (r *rig) restartCurrent(ctx context.Context, rd *round, i int, streams ...string) {
	n := r.nodes[i]
	r.startNode(i)
	r.t.Logf("%s restarted %s after the kill", n.name, time.Since(rd.killed).Round(time.Millisecond))
	took := r.waitFor(ctx, r.p.Current, "every replica current after "+n.name+"'s restart", func() error {
		for _, s := range streams {
			if err := r.allCurrent(ctx, s); err != nil {
				return err
			}
		}
		return nil
	})
	r.t.Logf("observed: restart → every replica of %s current and every server healthy: %s (kill → current: %s)",
		strings.Join(streams, ", "), took.Round(10*time.Millisecond), time.Since(rd.killed).Round(10*time.Millisecond))
}

// lameDuck takes the server leading FERRY_AGG out as docs/operations.md
// says for a rolling upgrade of nats-server (nats-server --signal ldm:
// it hands its leaderships to the others, closes its clients and exits),
// starts it again, and waits until every replica is current.
func lameDuck(r *rig, ctx context.Context, rd *round) {
	i := r.streamLeader(ctx, jetlog.StreamAgg)
	n := r.nodes[i]
	agg := r.appending(ctx)
	out, err := proctest.Run(ctx, 30*time.Second, bins.natsServer, "--signal", fmt.Sprintf("ldm=%d", n.proc.Pid()))
	if err != nil {
		r.t.Fatalf("nats-server --signal ldm: %v: %s", err, out)
	}
	rd.killed = time.Now()
	r.t.Logf("%s, leader of FERRY_AGG, in lame duck mode (aggregate log at %d, %d/%d CARs stored)", n.name, agg, rd.prod.Stored.Load(), len(rd.evs))
	r.resumed(ctx, rd, agg, n.name+" in lame duck mode")
	select {
	case <-n.proc.Exited():
		r.t.Logf("%s exited %s after the signal", n.name, time.Since(rd.killed).Round(10*time.Millisecond))
	case <-time.After(2 * time.Minute):
		r.t.Fatalf("%s still runs 2 minutes after entering lame duck mode", n.name)
	}
	r.restartCurrent(ctx, rd, i, jetlog.StreamIn, jetlog.StreamAgg)
}

// finish waits for the round's producer, then for every CAR published so
// far (total) to be DEAL_PROCESSED, for the servers' copies of the logs to
// agree and every ferry to have caught up; then it audits through every
// ferry and compares their answers for every CAR.
func (r *rig) finish(ctx context.Context, rd *round, total int) {
	t := r.t
	select {
	case err := <-rd.done:
		if err != nil {
			t.Fatalf("producer: %v", err)
		}
	case <-ctx.Done():
		t.Fatalf("producer did not finish: %d/%d stored", rd.prod.Stored.Load(), len(rd.evs))
	}
	r.converge(ctx, total)
	took := r.waitFor(ctx, r.p.Current, "every server healthy and holding the same logs", func() error {
		for _, s := range []string{jetlog.StreamIn, jetlog.StreamAgg, jetlog.StreamReceipts} {
			if err := r.allCurrent(ctx, s); err != nil {
				return err
			}
			if err := r.sameCopies(s); err != nil {
				return err
			}
		}
		return nil
	})
	last, _ := r.aggs.last()
	t.Logf("every server healthy, with the same copies of FERRY_IN, FERRY_AGG and FERRY_RECEIPTS (aggregate log at %d), %s after convergence", last, took.Round(10*time.Millisecond))
	r.waitFor(ctx, time.Minute, "every ferry's read models at the aggregate log's end, and a receipt for every CAR, mirrored to producers", func() error {
		info, err := r.streamInfo(ctx, jetlog.StreamAgg)
		if err != nil {
			return err
		}
		for _, f := range r.ferry {
			ok, seq := proctest.Healthy(f.http)
			if !ok || seq != info.State.LastSeq {
				return fmt.Errorf("%s: healthy %v, read models at %d of %d", f.name, ok, seq, info.State.LastSeq)
			}
		}
		rec, err := r.streamInfo(ctx, jetlog.StreamReceipts)
		if err != nil {
			return err
		}
		if rec.State.Msgs < uint64(total) {
			return fmt.Errorf("%d receipts for %d CARs", rec.State.Msgs, total)
		}
		// Producers read receipts from the PUBLISH account's mirror.
		mctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		mirror, err := r.receipts.Stream(mctx, jetlog.StreamReceipts)
		if err != nil {
			return fmt.Errorf("the publish user's %s: %w", jetlog.StreamReceipts, err)
		}
		if got := mirror.CachedInfo().State; got.LastSeq != rec.State.LastSeq || got.Msgs != rec.State.Msgs {
			return fmt.Errorf("the publish account's receipts mirror holds %d messages to %d, ferry's %d to %d", got.Msgs, got.LastSeq, rec.State.Msgs, rec.State.LastSeq)
		}
		return nil
	})
	evs := r.cars.Events[:total]
	var first map[string][]byte
	for k, f := range r.ferry {
		start := time.Now()
		out, err := runFerry(ctx, 5*time.Minute, "audit", "--nats", r.urls(), "--nats-nkey", r.seed(natsembed.RoleAdmin), "--server", f.http)
		t.Logf("ferry audit through %s (%s): %s", f.name, time.Since(start).Round(time.Millisecond), clip(out, 30))
		if err != nil {
			t.Errorf("ferry audit through %s: %v", f.name, err)
		}
		bodies := carload.CheckCars(t, ctx, f.http, evs)
		if k == 0 {
			first = bodies
			continue
		}
		var differ []string
		for _, ev := range evs {
			if string(bodies[ev.Car]) != string(first[ev.Car]) {
				differ = append(differ, fmt.Sprintf("%s: %s answers %s, %s answers %s", ev.Car, r.ferry[0].name, first[ev.Car], f.name, bodies[ev.Car]))
			}
		}
		if len(differ) > 0 {
			t.Errorf("%d of %d CARs answered differently by %s and %s, e.g.\n  %s", len(differ), len(evs), r.ferry[0].name, f.name,
				strings.Join(differ[:min(3, len(differ))], "\n  "))
		}
	}
	t.Logf("%d CARs DEAL_PROCESSED, answered alike by %d ferries", total, len(r.ferry))
	r.checkHealth(rd)
}

// converge waits until total CARs are in DEAL_PROCESSED aggregates,
// closing an aggregate left INGESTING (its CARs wait for more payload).
func (r *rig) converge(ctx context.Context, total int) {
	t := r.t
	start := time.Now()
	deadline := start.Add(r.p.Converge)
	lastIngesting, since, lastLog := uint64(0), time.Now(), time.Now()
	var tl carload.Tally
	var err error
	for {
		tl, err = carload.ListTally(ctx, r.front.addr)
		if err == nil {
			done := tl.Cars[aggregator.DealProcessed]
			if done > total {
				t.Fatalf("%d CARs in DEAL_PROCESSED aggregates, only %d were published: %s", done, total, tl)
			}
			if done == total {
				t.Logf("all %d CARs DEAL_PROCESSED %s after publishing ended: %s", total, time.Since(start).Round(time.Millisecond), tl)
				return
			}
			if tl.Ingesting != lastIngesting {
				lastIngesting, since = tl.Ingesting, time.Now()
			} else if tl.Ingesting != 0 && time.Since(since) > 5*time.Second {
				out, err := runFerry(ctx, 30*time.Second, "aggregates", "--server", r.front.addr, "close", strconv.FormatUint(tl.Ingesting, 10))
				t.Logf("aggregate %d INGESTING for %s: ferry aggregates close: %s %v", tl.Ingesting,
					time.Since(since).Round(time.Second), strings.TrimSpace(out), err)
				since = time.Now()
			}
		}
		if time.Since(lastLog) > 15*time.Second {
			lastLog = time.Now()
			queued, _ := proctest.Metric(r.front.addr, "ferry_cars_queued")
			t.Logf("converging %s: %s; queued %v; CAR fetches %d; list err %v", time.Since(start).Round(time.Second),
				tl, queued, r.cars.Fetches.Load(), err)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			// Which CARs, in which state, on each ferry.
			for _, f := range r.ferry {
				carload.CheckCars(t, context.Background(), f.http, r.cars.Events[:total])
			}
			t.Fatalf("not every CAR DEAL_PROCESSED within %s: %s (%v)", r.p.Converge, tl, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// checkHealth says, for each ferry, how long and why its /healthz
// answered other than 200 from the kill to the end of the checks, and
// requires 200 throughout of every ferry that was not killed: a stream
// electing its leader, or a client moving to another server, is the
// cluster healing itself and fails no ferry's health (internal/node's
// healthGrace).
func (r *rig) checkHealth(rd *round) {
	for _, f := range r.ferry {
		span, reasons := r.health.unhealthy(f.name, rd.killed, time.Now(), false)
		switch {
		case span == 0:
			r.t.Logf("observed: %s /healthz 200 throughout", f.name)
		case rd.killedFerry == f:
			r.t.Logf("observed: %s (killed) /healthz not 200 over %s after the kill: %s", f.name, span.Round(100*time.Millisecond), strings.Join(reasons, "; "))
		default:
			r.t.Errorf("%s /healthz not 200 over %s after the kill: %s", f.name, span.Round(100*time.Millisecond), strings.Join(reasons, "; "))
		}
	}
}

// checkServerLogs fails the test for the replica faults of issue 19 in
// any server's log: a copy that stopped applying the log.
func (r *rig) checkServerLogs(t *testing.T) {
	for _, n := range r.nodes {
		data, err := os.ReadFile(n.proc.Log)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, "Error applying stream entries") || strings.Contains(line, "last msgid mismatch") ||
				strings.Contains(line, "stream write error") {
				t.Errorf("%s (%s): %s", n.name, filepath.Base(n.proc.Log), line)
			}
		}
	}
}
