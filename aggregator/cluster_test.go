package aggregator

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/natscluster"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Issue 19, first fault: the server leading FERRY_AGG died during appends
// and came back on its store; with Nats-Expected-Last-Msg-Id on the
// appends its replica stopped applying the log ("last msgid mismatch")
// and stayed not current. With the guard appendOpts makes now, every
// replica is current again within a bound, and the log holds every append
// once, in order.
func TestClusterRestartedStreamLeaderCatchesUp(t *testing.T) {
	c := natscluster.Start(t, 3)
	_, js := c.Connect(jetstream.WithPublishAsyncTimeout(10 * time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := jetlog.EnsureStreams(ctx, js, jetlog.StreamOptions{Subjects: jetlog.DefaultSubjects, Replicas: 3}); err != nil {
		t.Fatalf("streams: %v", err)
	}
	c.Eventually(30*time.Second, "a leader of "+jetlog.StreamAgg, func() error {
		if c.StreamLeader(jetlog.StreamAgg) < 0 {
			return errors.New("none")
		}
		return nil
	})

	a := &appender{js: js, stream: jetlog.StreamAgg}
	done := make(chan error, 1)
	actx, stop := context.WithCancel(ctx)
	go func() { done <- a.run(actx) }()
	var stopOnce sync.Once
	stopAppends := func() error {
		var err error
		stopOnce.Do(func() { stop(); err = <-done })
		return err
	}
	defer stopAppends()
	progress := func(n uint64, what string) {
		t.Helper()
		from := a.stored.Load()
		c.Eventually(60*time.Second, fmt.Sprintf("%d appends %s", n, what), func() error {
			select {
			case err := <-done:
				t.Fatalf("appends stopped: %v", err)
			default:
			}
			if got := a.stored.Load() - from; got < n {
				return fmt.Errorf("%d appends", got)
			}
			return nil
		})
	}

	progress(100, "before the stop")
	leader := c.StreamLeader(jetlog.StreamAgg)
	if leader < 0 {
		t.Fatal("no leader of " + jetlog.StreamAgg)
	}
	c.Stop(leader)
	// The log goes on without the stopped server: a new leader is elected
	// and the stopped replica falls behind.
	progress(100, "while server "+strconv.Itoa(leader)+" is down")
	// As after a longer outage: the others have compacted what it missed.
	if err := c.Snapshot(jetlog.StreamAgg); err != nil {
		t.Fatal(err)
	}
	progress(20, "after the snapshot")
	c.Restart(leader)
	restarted := time.Now()
	progress(50, "after the restart")
	// Appends go on while the restarted replica catches up: the append
	// after its catch-up is the one that broke it.
	c.Eventually(30*time.Second, "every replica of "+jetlog.StreamAgg+" current", func() error {
		for i := range c.Servers {
			if err := c.Current(i, jetlog.StreamAgg); err != nil {
				return err
			}
		}
		return nil
	})
	current := time.Since(restarted)
	progress(50, "after every replica was current")
	if err := stopAppends(); err != nil {
		t.Fatalf("appends: %v", err)
	}
	// The appender waits for the acknowledgement of its last append, but
	// one it gave up on may still be stored: the log ends at what it
	// counted or one after.
	stored := a.stored.Load()
	var last uint64
	c.Eventually(30*time.Second, "every replica holding the whole log", func() error {
		last = 0
		for i := range c.Servers {
			if err := c.Current(i, jetlog.StreamAgg); err != nil {
				return err
			}
			st, err := c.Replica(i, jetlog.StreamAgg)
			if err != nil {
				return err
			}
			if last == 0 {
				last = st.LastSeq
			}
			if st.FirstSeq != 1 || st.LastSeq != last || st.Msgs != last || st.NumDeleted != 0 || (last != stored && last != stored+1) {
				return fmt.Errorf("server %d holds %d..%d, %d messages, %d deleted; server 0 ends at %d, %d appends acknowledged", i, st.FirstSeq, st.LastSeq, st.Msgs, st.NumDeleted, last, stored)
			}
		}
		return nil
	})
	s, err := js.Stream(ctx, jetlog.StreamAgg)
	if err != nil {
		t.Fatal(err)
	}
	// Append k went to sequence k, once: no gap, no duplicate.
	for seq := uint64(1); seq <= last; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		if string(m.Data) != strconv.FormatUint(seq, 10) || m.Header.Get(jetstream.MsgIDHeader) != messageID(seq) {
			t.Fatalf("message %d holds append %q (id %q)", seq, m.Data, m.Header.Get(jetstream.MsgIDHeader))
		}
	}
	t.Logf("%d appends; server %d stopped while leading, restarted, every replica current %v after", last, leader, current.Round(time.Millisecond))
}

// appender appends to the aggregate log as the Runner does (appendOpts:
// one append in flight, expecting the sequence of the one before), append
// k holding k. It is the log's one writer, so an append that fails for a
// lost leader or a timeout is sent again; one found stored already (its
// acknowledgement was lost) counts as done.
type appender struct {
	js     jetstream.JetStream
	stream string
	stored atomic.Uint64 // appends stored: the log's last sequence
}

func (a *appender) run(ctx context.Context) error {
	for ctx.Err() == nil {
		next := a.stored.Load() + 1
		msg := nats.NewMsg(jetlog.DefaultSubjects.Decisions())
		msg.Data = []byte(strconv.FormatUint(next, 10))
		// Not ctx: stopping the appends waits for the acknowledgement
		// of the one in flight rather than leave it to land later.
		pctx, cancel := context.WithTimeout(context.Background(), jetlog.AckWait)
		ack, err := a.js.PublishMsg(pctx, msg, appendOpts(next-1, next)...)
		cancel()
		switch {
		case err == nil && ack.Sequence == next:
			a.stored.Store(next)
		case err == nil:
			return fmt.Errorf("append %d stored at %d (duplicate %v)", next, ack.Sequence, ack.Duplicate)
		case jetlog.IsConflict(err):
			// An earlier try of this append was stored, its
			// acknowledgement lost; anything else there is a second
			// writer.
			if err := a.storedBefore(ctx, next); err != nil {
				return err
			}
			a.stored.Store(next)
		case ctx.Err() != nil:
			return nil
		}
		// Other errors (no leader yet, a timeout) are retried.
	}
	return nil
}

func (a *appender) storedBefore(ctx context.Context, next uint64) error {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := a.js.Stream(rctx, a.stream)
	if err != nil {
		return err
	}
	m, err := s.GetMsg(rctx, next)
	if err != nil {
		return fmt.Errorf("append %d refused and not stored: %w", next, err)
	}
	if string(m.Data) != strconv.FormatUint(next, 10) {
		return fmt.Errorf("append %d refused: sequence %d holds %q", next, next, m.Data)
	}
	return nil
}

// Issue 19: an asynchronous publish sent as a stream lost its quorum
// never got an acknowledgement or an error, and the aggregator would have
// waited on it for good while renewing its lease. With two of three
// servers stopped, an append as the Runner makes it is resent up to its
// bound and then fails as ErrAppendUnsettled (the Runner steps down and
// rebuilds), and a synchronous publish to the input log fails too.
func TestClusterAppendWithoutQuorumFailsWithinTheBound(t *testing.T) {
	c := natscluster.Start(t, 3)
	_, js := c.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := jetlog.EnsureStreams(ctx, js, jetlog.StreamOptions{Subjects: jetlog.DefaultSubjects, Replicas: 3}); err != nil {
		t.Fatalf("streams: %v", err)
	}
	r := NewRunner(js, RunnerConfig{Subjects: jetlog.DefaultSubjects})
	// One append stored with a quorum, so the stream is in place on every
	// server.
	if err := waitAck(r.append(ctx, nil, group{msg: []byte("first"), batches: 1, lastIn: 1}, 0)); err != nil {
		t.Fatalf("append with a quorum: %v", err)
	}
	// Two servers go, whatever they lead; one is left, without a quorum
	// for any stream.
	c.Stop(0)
	c.Stop(1)

	// The resends' bound and the time to reconnect to the server left:
	// a bounded wait ends within it, an unbounded one never does.
	bound := settleWithin + 10*time.Second
	start := time.Now()
	a := r.append(ctx, nil, group{msg: []byte("second"), batches: 1, lastIn: 2}, 1)
	var err error
	select {
	case err = <-a.done:
	case <-time.After(bound):
	}
	if !errors.Is(err, ErrAppendUnsettled) {
		t.Fatalf("append without a quorum: %v after %v, want ErrAppendUnsettled within %v", err, time.Since(start), bound)
	}
	t.Logf("append without a quorum: %v after %v", err, time.Since(start))

	start = time.Now()
	pub := jetlog.NewPublisher(js, jetlog.DefaultSubjects)
	done := make(chan error, 1)
	go func() {
		_, err := pub.Publish(context.Background(), &events.Tick{Time: time.Unix(1, 0).UTC()})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a publish to the input log without a quorum was stored")
		}
		t.Logf("publish without a quorum: %v after %v", err, time.Since(start))
	case <-time.After(bound):
		t.Fatalf("a publish to the input log without a quorum was not answered within %v", bound)
	}
}
