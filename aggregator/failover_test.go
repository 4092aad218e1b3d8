package aggregator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A leader whose renewals stop reaching the server (its lease connection
// stalls while its appends still flow) must stop appending before its
// key can expire, since a standby may create the key from then on. The
// server's removal of the key is watched from outside; the last append
// the stalled leader got stored must come before it. Once the connection
// flows again the leader finds its lease gone, steps down, leads again
// and folds every input: nothing lost, nothing doubled.
func TestALeaderWhoseRenewalsStallStopsAppendingBeforeItsLeaseCanExpire(t *testing.T) {
	n := testutil.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	proxy := startProxy(t, n.Server.Addr().String())
	_, leaseJS := testutil.Connect(t, "nats://"+proxy.addr(), nats.ReconnectWait(50*time.Millisecond), nats.MaxReconnects(-1))
	_, js := testutil.Connect(t, n.URL())
	r := NewRunner(js, RunnerConfig{Fold: testConfig(), Subjects: jetlog.DefaultSubjects, Holder: "stalled", LeaseJS: leaseJS, Log: quiet()})
	var wg sync.WaitGroup
	rctx, stop := context.WithCancel(ctx)
	wg.Go(func() { _ = r.Run(rctx) })
	defer wg.Wait()
	defer stop()

	feed := startFeed(t, ctx, js, 20*time.Millisecond)
	waitAppended(t, js, 20, "before the stall")

	kv, err := js.KeyValue(ctx, jetlog.BucketLeader)
	if err != nil {
		t.Fatal(err)
	}
	proxy.pause()
	stalled := time.Now()
	// The key is gone once the server removed it: from then on a
	// standby could lead.
	var gone time.Time
	testutil.Eventually(t, 10*time.Second, "the lease key removed by its TTL", func() bool {
		_, err := kv.Get(ctx, leaseKey)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			gone = time.Now()
			return true
		}
		return false
	})
	// Inputs keep coming; a leader that went on appending would have
	// stored some of them after the key was removed.
	time.Sleep(renewEvery)
	last := lastStored(t, js)
	if !last.Before(gone) {
		t.Fatalf("the stalled leader's last append was stored at %v, after its key was removed at %v", last, gone)
	}
	if st := r.Status(); !st.Leader {
		t.Fatalf("the stalled leader says it does not lead: %+v", st)
	}
	t.Logf("renewals stalled at %v; last append stored %v after, key removed %v after (lease TTL %v)",
		stalled.Format(time.StampMilli), last.Sub(stalled).Round(time.Millisecond), gone.Sub(stalled).Round(time.Millisecond), jetlog.LeaseTTL)

	proxy.resume()
	feed.stop(t)
	waitFolded(t, ctx, js, func() bool { return r.Status().Leader })
	checkAggregateLog(t, ctx, js, testConfig())
}

// A leader that dies without releasing its lease (its connection closed)
// is replaced by a standby once the key expires: the standby leads and
// appends within the TTL, its poll, and the time it takes to rebuild a
// short log. Nothing is lost or doubled.
func TestAStandbyTakesOverFromACrashedLeaderWithinTheLeaseBound(t *testing.T) {
	n := testutil.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ncA, jsA := testutil.Connect(t, n.URL())
	_, jsB := testutil.Connect(t, n.URL())
	a := NewRunner(jsA, RunnerConfig{Fold: testConfig(), Subjects: jetlog.DefaultSubjects, Holder: "a", Log: quiet()})
	b := NewRunner(jsB, RunnerConfig{Fold: testConfig(), Subjects: jetlog.DefaultSubjects, Holder: "b", Log: quiet()})
	var wg sync.WaitGroup
	actx, stopA := context.WithCancel(ctx)
	bctx, stopB := context.WithCancel(ctx)
	defer wg.Wait()
	defer stopB()
	defer stopA()
	wg.Go(func() { _ = a.Run(actx) })
	testutil.Eventually(t, 10*time.Second, "a leading", func() bool { return a.Status().Leader })
	wg.Go(func() { _ = b.Run(bctx) })

	_, js := testutil.Connect(t, n.URL())
	feed := startFeed(t, ctx, js, 20*time.Millisecond)
	waitAppended(t, js, 20, "before the crash")

	// The crash: a's connection closes under it, so it neither releases
	// nor renews; then its goroutines stop.
	ncA.Close()
	crashed := time.Now()
	stopA()
	at, err := jetlog.LastSeq(ctx, js, jetlog.StreamAgg, "")
	if err != nil {
		t.Fatal(err)
	}
	bound := jetlog.LeaseTTL + pollEvery + time.Second
	testutil.Eventually(t, bound+10*time.Second, "b leading and appending", func() bool {
		st := b.Status()
		return st.Leader && st.AggSeq > at
	})
	took := time.Since(crashed)
	if took > bound {
		t.Errorf("b appended %v after a's crash, more than %v (lease TTL %v, poll %v, and a second to rebuild)", took, bound, jetlog.LeaseTTL, pollEvery)
	}
	t.Logf("b appended %v after a's crash", took.Round(time.Millisecond))

	feed.stop(t)
	waitFolded(t, ctx, js, func() bool { return b.Status().Leader })
	checkAggregateLog(t, ctx, js, testConfig())
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// proxy forwards TCP connections to a server on loopback; pause holds
// every byte either way until resume, as a stalled network does.
type proxy struct {
	ln   net.Listener
	mu   sync.Mutex
	open chan struct{} // closed while bytes flow
}

func startProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, open: make(chan struct{})}
	close(p.open)
	var conns sync.WaitGroup
	t.Cleanup(func() { ln.Close(); p.resume(); conns.Wait() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			conns.Go(func() { p.pipe(s, c) })
			conns.Go(func() { p.pipe(c, s) })
		}
	}()
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) gate() chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open
}

func (p *proxy) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.open = make(chan struct{})
}

func (p *proxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
	default:
		close(p.open)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			<-p.gate()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// feed publishes a new CAR every period until stopped; a publish that
// fails is sent again under the same message id until it is stored, so
// every CAR is in the input log once.
type feed struct {
	stopf context.CancelFunc
	done  chan struct{}
	sent  atomic.Int64
	err   error
}

func startFeed(t testing.TB, ctx context.Context, js jetstream.JetStream, period time.Duration) *feed {
	ctx, cancel := context.WithCancel(ctx)
	f := &feed{stopf: cancel, done: make(chan struct{})}
	pub := jetlog.NewPublisher(js, jetlog.DefaultSubjects)
	go func() {
		defer close(f.done)
		t := time.NewTicker(period)
		defer t.Stop()
		for n := 1; ; n++ {
			ev := testutil.Replicated(n, 4<<10, true)
			for {
				if _, err := pub.Publish(ctx, ev); err == nil {
					break
				} else if ctx.Err() != nil {
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
			f.sent.Add(1)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	t.Cleanup(cancel)
	return f
}

func (f *feed) stop(t testing.TB) {
	f.stopf()
	<-f.done
	t.Logf("%d inputs fed", f.sent.Load())
}

// waitAppended waits until the aggregate log holds n more messages.
func waitAppended(t testing.TB, js jetstream.JetStream, n uint64, what string) {
	t.Helper()
	from := lastSeq(t, js, jetlog.StreamAgg)
	testutil.Eventually(t, 20*time.Second, fmt.Sprintf("%d appends %s", n, what), func() bool {
		return lastSeq(t, js, jetlog.StreamAgg) >= from+n
	})
}

func lastSeq(t testing.TB, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), jetlog.AckWait)
	defer cancel()
	seq, err := jetlog.LastSeq(ctx, js, stream, "")
	if err != nil {
		t.Fatalf("%s: %v", stream, err)
	}
	return seq
}

// lastStored is when the aggregate log stored its last message.
func lastStored(t testing.TB, js jetstream.JetStream) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), jetlog.AckWait)
	defer cancel()
	st, err := js.Stream(ctx, jetlog.StreamAgg)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastTime
}

// waitFolded waits until leading holds and the aggregate log ends with
// the batch of the input log's last input (every input of these tests, a
// CAR, makes a batch). The input log's end is read at each look: a
// publish cancelled as its feed stopped may be stored a moment after.
func waitFolded(t testing.TB, ctx context.Context, js jetstream.JetStream, leading func() bool) {
	t.Helper()
	var in, folded uint64
	defer func() {
		if t.Failed() {
			t.Logf("the input log ends at %d, the aggregate log with the batch of input %d", in, folded)
		}
	}()
	testutil.Eventually(t, 60*time.Second, "the input log's last input folded and appended", func() bool {
		if !leading() {
			return false
		}
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		end, err := jetlog.LastSeq(rctx, js, jetlog.StreamIn, "")
		if err != nil {
			return false
		}
		in, folded = end, lastFolded(ctx, js, time.Second)
		return folded == in
	})
}

// lastFolded is the input whose batch ends the aggregate log (its message
// id names it), 0 if the leader does not answer within wait (a
// measurement polls with a short one).
func lastFolded(ctx context.Context, js jetstream.JetStream, wait time.Duration) uint64 {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	seq, err := jetlog.LastSeq(ctx, js, jetlog.StreamAgg, "")
	if err != nil || seq == 0 {
		return 0
	}
	id, _, err := jetlog.MsgID(ctx, js, jetlog.StreamAgg, seq)
	if err != nil {
		return 0
	}
	in, _ := strconv.ParseUint(strings.TrimPrefix(id, "batch/"), 10, 64)
	return in
}

// readLog reads the whole of stream. A read that fails (right after a
// kill the cluster may leave a consumer creation unanswered) is made
// again, up to three times.
func readLog(t testing.TB, ctx context.Context, js jetstream.JetStream, stream string) []jetlog.Entry {
	t.Helper()
	var err error
	for range 3 {
		var entries []jetlog.Entry
		err = jetlog.Tail(ctx, js, stream, 1, false, func(e jetlog.Entry) error {
			entries = append(entries, jetlog.Entry{Seq: e.Seq, Data: bytes.Clone(e.Data), Time: e.Time})
			return nil
		})
		if err == nil {
			return entries
		}
	}
	t.Fatalf("read %s: %v", stream, err)
	return nil
}

// checkAggregateLog holds the whole aggregate log to InvariantModel and
// to a refold of the whole input log by one state, as a single leader
// that never failed over would have written it: the same batches, byte
// for byte, in the same order, none missing and none twice.
func checkAggregateLog(t testing.TB, ctx context.Context, js jetstream.JetStream, cfg events.Settings) {
	t.Helper()
	m := NewInvariantModel()
	var logged [][]byte
	for _, e := range readLog(t, ctx, js, jetlog.StreamAgg) {
		for data := range events.Batches(e.Data) {
			var b events.Batch
			if err := events.DecodeBatch(data, &b); err != nil {
				t.Fatalf("aggregate log %d: %v", e.Seq, err)
			}
			if err := m.Apply(b); err != nil {
				t.Fatalf("aggregate log %d: %v", e.Seq, err)
			}
			logged = append(logged, bytes.Clone(data))
		}
	}
	if err := m.Check(cfg.DealSize); err != nil {
		t.Fatal(err)
	}
	st := New(cfg)
	var want [][]byte
	for _, e := range readLog(t, ctx, js, jetlog.StreamIn) {
		b := st.ApplyInput(Input{Seq: e.Seq, Data: e.Data, Stored: e.Time})
		if len(b.Decisions) == 0 {
			continue
		}
		data, err := events.EncodeBatch(nil, &b)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, data)
	}
	for i := range min(len(logged), len(want)) {
		if !bytes.Equal(logged[i], want[i]) {
			t.Fatalf("batch %d of the aggregate log differs from a single leader's:\n got %s\nwant %s", i+1, logged[i], want[i])
		}
	}
	if len(logged) != len(want) {
		t.Fatalf("the aggregate log holds %d batches, a single leader's fold of the input log %d", len(logged), len(want))
	}
	if m.Cars() == 0 {
		t.Fatal("no CAR was folded")
	}
	t.Logf("aggregate log: %d batches, %d CARs, as a single leader's", len(logged), m.Cars())
}

// An append is resent under the same message id and expected last
// sequence when its acknowledgement does not come, so a try may find an
// earlier try of itself stored. A replicated stream answers that as a
// duplicate at the sequence expected, a single server (this one) as a
// conflict: either way the append is stored, once. A duplicate at another
// sequence, or another writer's message in the way, is ErrDeposed.
func TestAnAppendFindingItsOwnEarlierTryStoredSettlesAsStored(t *testing.T) {
	n := testutil.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := NewRunner(n.JS, RunnerConfig{Subjects: jetlog.DefaultSubjects, Log: quiet()})
	stored := func(data string, after, lastIn uint64) {
		t.Helper()
		msg := nats.NewMsg(jetlog.DefaultSubjects.Decisions())
		msg.Data = []byte(data)
		if _, err := n.JS.PublishMsg(ctx, msg, appendOpts(after, lastIn)...); err != nil {
			t.Fatal(err)
		}
	}
	// An earlier try of the append after 0 ending with input 5 was
	// stored at 1, its acknowledgement lost.
	stored("five", 0, 5)
	if err := waitAck(r.append(ctx, nil, group{msg: []byte("five"), batches: 1, lastIn: 5}, 0)); err != nil {
		t.Fatalf("the append finding its own earlier try at 1: %v", err)
	}
	// Another writer stored input 7's batch at 2; this writer, believing
	// the log ends at 2, appends input 7's batch there: a duplicate at 2,
	// not at 3.
	stored("seven", 1, 7)
	err := waitAck(r.append(ctx, nil, group{msg: []byte("seven"), batches: 1, lastIn: 7}, 2))
	if !errors.Is(err, ErrDeposed) {
		t.Fatalf("a duplicate at another sequence than expected: %v, want ErrDeposed", err)
	}
	// Past the duplicate window a try after a stored one is refused as a
	// conflict; the message in the way decides.
	conflict := errors.New("wrong last sequence")
	if done, err := r.storedBefore(ctx, &appending{after: 1, lastIn: 7}, conflict); !done || err != nil {
		t.Fatalf("the message at 2 carries the append's id: settled %v, %v", done, err)
	}
	if done, err := r.storedBefore(ctx, &appending{after: 1, lastIn: 8}, conflict); !done || !errors.Is(err, ErrDeposed) {
		t.Fatalf("the message at 2 is another's: settled %v, %v, want ErrDeposed", done, err)
	}
	// A leader that lost its quorum counts a try it proposed but never
	// stored and refuses the next: nothing at 3 settles nothing.
	if done, err := r.storedBefore(ctx, &appending{after: 2, lastIn: 9}, conflict); done {
		t.Fatalf("nothing at 3: settled with %v", err)
	}
	if got := lastSeq(t, n.JS, jetlog.StreamAgg); got != 2 {
		t.Fatalf("the log ends at %d, want 2: a resend stored a message twice", got)
	}
}
