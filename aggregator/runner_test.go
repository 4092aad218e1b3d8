package aggregator

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go/jetstream"
)

// Issue 15, finding 1: a batch over the message limit made the runner fail
// its append, restart, fold the same input and fail again, for good, with
// every input behind it waiting. The runner must refuse that input on the
// record and go on. The fold keeps batches far below NATS's default
// limit (TestNoInputUpToTheMaxPayloadMakesABatchTheLogRefuses); a server
// with a 16 KiB limit makes a batch that cannot fit.
func TestTheRunnerRefusesOnTheRecordABatchTheLogCannotTake(t *testing.T) {
	ctx := context.Background()
	js, r := runAlone(t, natsembed.Config{MaxPayload: 16 << 10})

	// 16 URLs of 400 raw '<': a 7 KB input whose record escapes to 38 KB.
	good := testutil.Replicated(1, 1000, true)
	urls := make([]string, events.MaxURLs)
	for i := range urls {
		urls[i] = fmt.Sprintf("%q", "https://a.example/"+strings.Repeat("<", 400))
	}
	big := fmt.Sprintf(`{"type":"car.replicated","version":1,"car":%q,"size":1000,"md5":%q,"urls":[%s],"piece":%q}`,
		testutil.CarCID(2).String(), good.MD5, strings.Join(urls, ","), good.Piece)
	big = strings.ReplaceAll(big, `\u003c`, "<")
	pub := jetlog.NewPublisher(js, jetlog.DefaultSubjects)
	if _, err := js.Publish(ctx, jetlog.DefaultSubjects.Input(events.TypeCarReplicated), []byte(big)); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Publish(ctx, good); err != nil {
		t.Fatal(err)
	}
	var decisions []events.Decision
	testutil.Eventually(t, 20*time.Second, "both inputs decided", func() bool {
		decisions = nil
		err := jetlog.Tail(ctx, js, jetlog.StreamAgg, 1, false, func(e jetlog.Entry) error {
			return events.EachBatch(e.Data, func(b *events.Batch) error {
				decisions = append(decisions, b.Decisions...)
				return nil
			})
		})
		return err == nil && len(decisions) > 0 && decisions[len(decisions)-1].Type == events.DecCarAdded
	})
	var refused bool
	for _, d := range decisions {
		refused = refused || (d.Type == events.DecInputIgnored && strings.Contains(d.Reason, "message limit"))
	}
	if !refused {
		t.Fatalf("no refusal on the record: %+v", decisions)
	}
	if st := r.Status(); !st.Leader || st.LastIn != 2 {
		t.Fatalf("runner %+v, want leading past both inputs", st)
	}
}

// An input that decides nothing (a tick before any max wait) appends
// nothing, yet it is applied: the runner's status must say so, or
// ferry_inputs_waiting and everything that waits on the status counted it
// as waiting until the next append. A fresh-clone CI run timed out that
// way when a live test's last tick arrived after the last append.
func TestTheRunnerReportsAnInputThatDecidesNothingApplied(t *testing.T) {
	ctx := context.Background()
	js, r := runAlone(t, natsembed.Config{})

	pub := jetlog.NewPublisher(js, jetlog.DefaultSubjects)
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for _, ev := range []events.Event{&events.Tick{Time: t0}, testutil.Replicated(1, 1000, true)} {
		if _, err := pub.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	var appended uint64
	testutil.Eventually(t, 20*time.Second, "the CAR's batch stored", func() bool {
		st := r.Status()
		appended = st.AggSeq
		return st.Leader && st.LastIn == 2 && st.AggSeq > 0
	})
	// Ten seconds on, well inside the minute's max wait: no decision.
	if _, err := pub.Publish(ctx, &events.Tick{Time: t0.Add(10 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the tick reported applied", func() bool { return r.Status().LastIn == 3 })
	stream, err := js.Stream(ctx, jetlog.StreamAgg)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st := r.Status(); info.State.LastSeq != appended || st.AggSeq != appended {
		t.Fatalf("the tick was appended (aggregate log ends at %d, runner at %d, was %d): it should decide nothing", info.State.LastSeq, st.AggSeq, appended)
	}
}

// runAlone starts a NATS server with cfg (in a temporary directory, on
// loopback), ferry's streams and one runner on it, stopped at the test's
// end.
func runAlone(t *testing.T, cfg natsembed.Config) (jetstream.JetStream, *Runner) {
	t.Helper()
	cfg.Dir, cfg.Listen = t.TempDir(), "127.0.0.1:0"
	s, err := natsembed.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	_, js := testutil.Connect(t, s.ClientURL())
	ctx, cancel := context.WithCancel(context.Background())
	if err := jetlog.EnsureStreams(ctx, js, jetlog.StreamOptions{Subjects: jetlog.DefaultSubjects}); err != nil {
		cancel()
		t.Fatal(err)
	}
	r := NewRunner(js, RunnerConfig{Fold: testConfig(), Subjects: jetlog.DefaultSubjects, Holder: "test",
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	var wg sync.WaitGroup
	wg.Go(func() { _ = r.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return js, r
}
