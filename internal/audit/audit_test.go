package audit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/audit"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var foldCfg = events.Settings{DealSize: 8 << 20, MinPayload: aggregator.DefaultMinPayload(8 << 20), MaxWait: time.Hour}

// tickEvery puts a tick among the events of foldedLog; all ticks carry one
// time, so after the first they change nothing.
const tickEvery = 500

// foldedLog writes n car.replicated events, and a tick every tickEvery, to
// the input log and the fold's batches of them to the aggregate log, one
// batch a message, as the runner could. It returns the ticks' sequences.
// Without pieces the CARs stay queued: no aggregate closes, whose proofs
// are most of the fold's time.
func foldedLog(t *testing.T, js jetstream.JetStream, n int, withPieces bool) (ticks []uint64) {
	t.Helper()
	st := aggregator.New(foldCfg)
	sub := jetlog.DefaultSubjects
	var inputs, batches [][]byte
	var subjects []string
	for i := range n {
		if i%tickEvery == tickEvery-1 {
			inputs = append(inputs, testutil.MustEncode(&events.Tick{Time: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)}))
			subjects = append(subjects, sub.Input(events.TypeTick))
			ticks = append(ticks, uint64(len(inputs)))
		}
		inputs = append(inputs, testutil.MustEncode(testutil.Replicated(i, 1<<10+uint64(i*7919)%(199<<10+1), withPieces)))
		subjects = append(subjects, sub.Input(events.TypeCarReplicated))
	}
	for i, data := range inputs {
		b := st.Apply(uint64(i+1), data)
		if len(b.Decisions) > 0 {
			enc, err := json.Marshal(b)
			if err != nil {
				t.Fatal(err)
			}
			batches = append(batches, enc)
		}
	}
	publishAll(t, js, subjects, inputs)
	aggSubjects := make([]string, len(batches))
	for i := range aggSubjects {
		aggSubjects[i] = sub.Decisions()
	}
	publishAll(t, js, aggSubjects, batches)
	return ticks
}

// publishAll appends the messages in order, a window of them at a time.
func publishAll(t *testing.T, js jetstream.JetStream, subjects []string, data [][]byte) {
	t.Helper()
	const window = 2000
	for start := 0; start < len(data); start += window {
		var futs []jetstream.PubAckFuture
		for i := start; i < min(start+window, len(data)); i++ {
			f, err := js.PublishAsync(subjects[i], data[i])
			if err != nil {
				t.Fatal(err)
			}
			futs = append(futs, f)
		}
		for _, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				t.Fatal(err)
			case <-time.After(30 * time.Second):
				t.Fatal("no acknowledgement in 30s")
			}
		}
	}
}

func violations(rep *audit.Report) string {
	var b strings.Builder
	for _, v := range rep.Violations {
		b.WriteString(v.Concerns + ": " + v.Problem + "\n")
	}
	return b.String()
}

func TestAuditThatSkippedAMessageDoesNotSayOK(t *testing.T) {
	n := testutil.StartNATS(t)
	ticks := foldedLog(t, n.JS, 2000, true)
	ctx := context.Background()
	rep, err := audit.Run(ctx, n.JS, foldCfg, nil, nil)
	if err != nil || !rep.OK() {
		t.Fatalf("audit of the whole log: %v\n%s", err, violations(rep))
	}

	// A read that loses the last tick, which changed nothing: the refold
	// of the rest gives the same aggregate log.
	lost := ticks[len(ticks)-1]
	audit.SetTail(t.Cleanup, func(ctx context.Context, js jetstream.JetStream, stream string, from uint64, follow bool, fn func(jetlog.Entry) error) error {
		return jetlog.Tail(ctx, js, stream, from, follow, func(e jetlog.Entry) error {
			if stream == jetlog.StreamIn && e.Seq == lost {
				return nil
			}
			return fn(e)
		})
	})
	rep, err = audit.Run(ctx, n.JS, foldCfg, nil, nil)
	var partial *audit.PartialReadError
	if !errors.As(err, &partial) || rep != nil {
		t.Fatalf("an audit that skipped input %d: %v, report %+v", lost, err, rep)
	}
	if partial.Stream != jetlog.StreamIn || partial.Skipped != 1 || partial.At != lost {
		t.Fatalf("an audit that skipped input %d says %+v", lost, partial)
	}
}

func TestAuditOfALogReadShortOfItsEndGivesNoVerdict(t *testing.T) {
	n := testutil.StartNATS(t)
	foldedLog(t, n.JS, 1000, true)
	ctx := context.Background()
	st, err := n.JS.Stream(ctx, jetlog.StreamAgg)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	last := info.State.LastSeq
	// A read that ends early in silence, as a consumer on a replica
	// behind the stream did before reads knew the leader's last sequence.
	const stop = 232
	audit.SetTail(t.Cleanup, func(ctx context.Context, js jetstream.JetStream, stream string, from uint64, follow bool, fn func(jetlog.Entry) error) error {
		err := jetlog.Tail(ctx, js, stream, from, follow, func(e jetlog.Entry) error {
			if stream == jetlog.StreamAgg && e.Seq > stop {
				return errStop
			}
			return fn(e)
		})
		if errors.Is(err, errStop) {
			return nil
		}
		return err
	})
	rep, err := audit.Run(ctx, n.JS, foldCfg, nil, nil)
	if !errors.Is(err, audit.ErrPartialRead) || rep != nil {
		t.Fatalf("audit of a prefix: %v, report %+v", err, rep)
	}
	want := fmt.Sprintf("log FERRY_AGG: the audit read %d messages up to sequence %d of %d; %d stored messages were not delivered, the first at sequence %d",
		stop, stop, last, last-stop, stop+1)
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not say %q", err, want)
	}
}

var errStop = errors.New("stop")

func TestAuditReadsALargeLogWithoutDrops(t *testing.T) {
	const size = 20000
	n := testutil.StartNATS(t)
	start := time.Now()
	foldedLog(t, n.JS, size, false)
	t.Logf("log written in %v", time.Since(start))
	start = time.Now()
	defer func() { t.Logf("audited in %v", time.Since(start)) }()
	var drops atomic.Int64
	nc, err := nats.Connect(n.URL(), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrSlowConsumer) {
			drops.Add(1)
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Run(context.Background(), js, foldCfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Inputs != size+size/tickEvery || drops.Load() != 0 {
		t.Fatalf("audit of %d events: %d inputs, %d slow-consumer drops\n%s", size, rep.Inputs, drops.Load(), violations(rep))
	}
}
