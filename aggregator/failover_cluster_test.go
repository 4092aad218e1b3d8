package aggregator

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/internal/natscluster"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// leaseStream is the stream behind the lease bucket.
const leaseStream = "KV_" + jetlog.BucketLeader

// Failover on three in-process servers, replicas 3, while a feed keeps
// publishing inputs: the leading runner dies, then the server leading
// FERRY_IN, then the one leading FERRY_AGG. Each time the work resumes,
// and at the end the aggregate log is what a single leader would have
// written from the whole input log: nothing lost, nothing doubled.
func TestClusterFailoverLosesAndDoublesNothing(t *testing.T) {
	rig := newFailoverRig(t)
	rig.killLeadingRunner()
	rig.killStreamLeader(jetlog.StreamIn)
	rig.killStreamLeader(jetlog.StreamAgg)
	rig.check()
}

// BenchmarkFailoverLeadingRunner kills the leading runner (its connection
// closed, no release) once per iteration while inputs arrive, and reports
// the time to the first append its standby gets stored.
func BenchmarkFailoverLeadingRunner(b *testing.B) {
	rig := newFailoverRig(b)
	var resume []time.Duration
	for b.Loop() {
		resume = append(resume, rig.killLeadingRunner())
	}
	b.StopTimer()
	report(b, "resume", resume)
	rig.check()
}

// BenchmarkFailoverInputLeader shuts down the server leading FERRY_IN
// once per iteration and reports the stream's election time (until a
// server leads it again) and the time until an input stored after the
// stop is folded and its batch appended.
func BenchmarkFailoverInputLeader(b *testing.B) { benchStreamLeader(b, jetlog.StreamIn) }

// BenchmarkFailoverAggregateLeader is BenchmarkFailoverInputLeader for
// the server leading FERRY_AGG.
func BenchmarkFailoverAggregateLeader(b *testing.B) { benchStreamLeader(b, jetlog.StreamAgg) }

func benchStreamLeader(b *testing.B, stream string) {
	rig := newFailoverRig(b)
	var elect, resume, after []time.Duration
	for b.Loop() {
		e, r := rig.killStreamLeader(stream)
		elect, resume, after = append(elect, e), append(resume, r), append(after, r-e)
	}
	b.StopTimer()
	report(b, "elect", elect)
	report(b, "resume", resume)
	report(b, "resume-after-elect", after)
	rig.check()
}

// report reports the median and the worst of ds as <what>-median-s and
// <what>-worst-s, and logs them all.
func report(b *testing.B, what string, ds []time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	b.ReportMetric(s[len(s)/2].Seconds(), what+"-median-s")
	b.ReportMetric(s[len(s)-1].Seconds(), what+"-worst-s")
	var all []string
	for _, d := range ds {
		all = append(all, d.Round(time.Millisecond).String())
	}
	b.Logf("%s over %d kills: %s", what, len(ds), strings.Join(all, " "))
}

// failoverRig is three servers, two runners on connections of their own
// (one leads, one stands by) and a feed of inputs.
type failoverRig struct {
	tb      testing.TB
	c       *natscluster.Cluster
	ctx     context.Context
	js      jetstream.JetStream // the observer's and the feed's
	feed    *feed
	runners []*rigRunner
	started int
}

type rigRunner struct {
	nc   *nats.Conn
	r    *Runner
	stop context.CancelFunc
	done chan struct{}
}

func newFailoverRig(tb testing.TB) *failoverRig {
	c := natscluster.Start(tb, 3)
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	_, js := c.Connect()
	// Right after the start the meta leader may not know every peer yet.
	c.Eventually(30*time.Second, "ferry's streams on three replicas", func() error {
		return jetlog.EnsureStreams(ctx, js, jetlog.StreamOptions{Subjects: jetlog.DefaultSubjects, Replicas: 3})
	})
	rig := &failoverRig{tb: tb, c: c, ctx: ctx, js: js}
	rig.waitCurrent()
	rig.startRunner()
	c.Eventually(30*time.Second, "a runner leading", func() error {
		if rig.leader() == nil {
			return fmt.Errorf("none")
		}
		return nil
	})
	rig.startRunner()
	rig.feed = startFeed(tb, ctx, js, 10*time.Millisecond)
	waitAppended(tb, js, 50, "before the first kill")
	return rig
}

func (rig *failoverRig) startRunner() {
	nc, js := rig.c.Connect()
	ctx, stop := context.WithCancel(rig.ctx)
	rig.started++
	n := rig.started
	r := NewRunner(js, RunnerConfig{Fold: testConfig(), Subjects: jetlog.DefaultSubjects, Holder: "runner-" + strconv.Itoa(n), Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	rr := &rigRunner{nc: nc, r: r, stop: stop, done: make(chan struct{})}
	// As ferry serve's node does, a runner whose Run fails is started
	// again after a second.
	go func() {
		defer close(rr.done)
		for ctx.Err() == nil {
			if err := r.Run(ctx); err != nil && ctx.Err() == nil {
				rig.tb.Logf("runner %d stopped: %v", n, err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	rig.tb.Cleanup(func() { stop(); <-rr.done })
	rig.runners = append(rig.runners, rr)
}

func (rig *failoverRig) leader() *Runner {
	if rr := rig.leading(); rr != nil {
		return rr.r
	}
	return nil
}

func (rig *failoverRig) leading() *rigRunner {
	for _, rr := range rig.runners {
		if rr.r.Status().Leader {
			return rr
		}
	}
	return nil
}

// killLeadingRunner closes the leading runner's connection under it, as
// its process's death would, starts another standby, and returns the time
// from the death until another runner had an append stored.
func (rig *failoverRig) killLeadingRunner() time.Duration {
	i := slices.IndexFunc(rig.runners, func(rr *rigRunner) bool { return rr.r.Status().Leader })
	if i < 0 {
		rig.tb.Fatal("no runner leads")
	}
	dead := rig.runners[i]
	rig.runners = slices.Delete(rig.runners, i, i+1)
	dead.nc.Close()
	died := time.Now()
	dead.stop()
	<-dead.done
	at := lastSeq(rig.tb, rig.js, jetlog.StreamAgg)
	var took time.Duration
	rig.poll(30*time.Second, "another runner appending", func() bool {
		l := rig.leader()
		took = time.Since(died)
		return l != nil && l.Status().AggSeq > at
	})
	rig.startRunner()
	waitAppended(rig.tb, rig.js, 20, "after the runner's death")
	return took
}

// killStreamLeader shuts down the server leading stream, after moving the
// leaders of the other streams the runner writes (FERRY_IN, FERRY_AGG,
// the lease) off it, so that only the named stream loses its leader. It
// returns the time from the shutdown until the stream's info named a new
// leader (the election) and until an input stored after the election was folded
// and its batch stored in the aggregate log (the work resumed). The
// server is then restarted and every replica let catch up.
func (rig *failoverRig) killStreamLeader(stream string) (elect, resume time.Duration) {
	i := rig.c.StreamLeader(stream)
	if i < 0 {
		rig.tb.Fatalf("no leader of %s", stream)
	}
	for _, other := range []string{jetlog.StreamIn, jetlog.StreamAgg, leaseStream} {
		if other != stream {
			rig.moveLeader(other, i)
		}
	}
	on := "another server"
	if rr := rig.leading(); rr != nil && rr.nc.ConnectedServerName() == rig.c.Servers[i].Name() {
		on = "it"
	}
	dead := rig.c.Servers[i].Name()
	stopped := time.Now()
	rig.c.Kill(i)
	// Elected once the stream's info, which its leader answers, names
	// another server: a server calls itself leader a few hundred
	// milliseconds before the stream answers anything.
	rig.poll(60*time.Second, "a new leader of "+stream, func() bool {
		ctx, cancel := context.WithTimeout(rig.ctx, 50*time.Millisecond)
		defer cancel()
		st, err := rig.js.Stream(ctx, stream)
		elect = time.Since(stopped)
		if err != nil {
			return false
		}
		cl := st.CachedInfo().Cluster
		return cl != nil && cl.Leader != "" && cl.Leader != dead
	})
	// The inputs up to here may have been stored by the old leader while
	// it shut down: the work resumed once one after them is folded.
	var in uint64
	rig.poll(60*time.Second, "the input log's end", func() bool {
		ctx, cancel := context.WithTimeout(rig.ctx, 100*time.Millisecond)
		defer cancel()
		var err error
		in, err = jetlog.LastSeq(ctx, rig.js, jetlog.StreamIn, "")
		return err == nil
	})
	rig.poll(60*time.Second, "an input after the election folded and appended", func() bool {
		resume = time.Since(stopped)
		return lastFolded(rig.ctx, rig.js, 100*time.Millisecond) > in
	})
	rig.tb.Logf("server %d leading %s stopped, the leading runner connected to %s: elected %v, resumed %v after",
		i, stream, on, elect.Round(time.Millisecond), resume.Round(time.Millisecond))
	rig.c.Restart(i)
	rig.waitCurrent()
	waitAppended(rig.tb, rig.js, 20, "after the restart")
	return elect, resume
}

// moveLeader steps stream's leader down until server i no longer leads it.
func (rig *failoverRig) moveLeader(stream string, i int) {
	rig.c.Eventually(30*time.Second, stream+" led off server "+strconv.Itoa(i), func() error {
		l := rig.c.StreamLeader(stream)
		if l >= 0 && l != i {
			return nil
		}
		if l == i {
			_, _ = rig.js.Conn().Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, nil, 2*time.Second)
			time.Sleep(200 * time.Millisecond)
		}
		return fmt.Errorf("server %d leads it", l)
	})
}

// waitCurrent waits until every replica of the runner's streams is
// current with its leader.
func (rig *failoverRig) waitCurrent() {
	rig.c.Eventually(60*time.Second, "every replica current", func() error {
		for _, stream := range []string{jetlog.StreamIn, jetlog.StreamAgg, leaseStream} {
			if rig.c.StreamLeader(stream) < 0 {
				return fmt.Errorf("no leader of %s", stream)
			}
			// The stream, not its consumers: a dead runner's ephemeral
			// consumers stay assigned until their inactivity threshold.
			for i, s := range rig.c.Servers {
				if s == nil || !s.JetStreamIsStreamCurrent(natscluster.Account, stream) {
					return fmt.Errorf("server %d: replica of %s not current", i, stream)
				}
			}
		}
		return nil
	})
}

// poll checks cond every 2 ms until it holds; cond measures as it goes.
func (rig *failoverRig) poll(timeout time.Duration, what string, cond func() bool) {
	rig.tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			rig.tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// check stops the feed and checks the aggregate log once the leader has
// folded every input.
func (rig *failoverRig) check() {
	rig.feed.stop(rig.tb)
	// Whichever runner leads: on a loaded machine the lease may change
	// hands between here and the last input's fold.
	defer rig.explain()
	waitFolded(rig.tb, rig.ctx, rig.js, func() bool { return rig.leader() != nil })
	checkAggregateLog(rig.tb, rig.ctx, rig.js, testConfig())
}

// explain logs, after a failed check, what each runner and each stream
// leader says, for the failure's reader.
func (rig *failoverRig) explain() {
	if !rig.tb.Failed() {
		return
	}
	for i, rr := range rig.runners {
		rig.tb.Logf("runner %d (connected to %s): %+v", i, rr.nc.ConnectedServerName(), rr.r.Status())
	}
	ctx, cancel := context.WithTimeout(rig.ctx, 5*time.Second)
	defer cancel()
	seq, err := jetlog.LastSeq(ctx, rig.js, jetlog.StreamAgg, "")
	rig.tb.Logf("the aggregate log ends at %d (%v)", seq, err)
	for _, stream := range []string{jetlog.StreamIn, jetlog.StreamAgg, leaseStream} {
		rig.tb.Logf("%s led by server %d", stream, rig.c.StreamLeader(stream))
		for i, s := range rig.c.Servers {
			if s != nil {
				rig.tb.Logf("  server %d: replica current %v", i, s.JetStreamIsStreamCurrent(natscluster.Account, stream))
			}
		}
	}
}
