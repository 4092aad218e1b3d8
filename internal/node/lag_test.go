package node

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
)

// aggLog is a server whose aggregate log holds n messages.
func aggLog(t *testing.T, n int) *testutil.NATS {
	nt := testutil.StartNATS(t)
	for range n {
		if _, err := nt.JS.Publish(context.Background(), jetlog.DefaultSubjects.Decisions(), []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	return nt
}

func TestProjectionLagIsCountedFromTheLeadersLastSequenceAndFailsHealthPastItsBound(t *testing.T) {
	nt := aggLog(t, 3)
	ctx := context.Background()
	var applied atomic.Uint64
	applied.Store(1)
	w := newLagWatch(nt.JS, applied.Load, time.Minute)
	clock := time.Date(2026, 12, 6, 4, 0, 0, 0, time.UTC)
	w.now = func() time.Time { return clock }
	if err := w.poll(ctx); err != nil {
		t.Fatal(err)
	}
	if msgs, age := w.lag(); msgs != 2 || age != 0 {
		t.Fatalf("lag %d messages for %s; want 2 for 0s", msgs, age)
	}
	// Still behind the same sequence a minute and a second on, the log
	// having grown meanwhile: the age counts from the first sequence
	// seen and not applied.
	if _, err := nt.JS.Publish(ctx, jetlog.DefaultSubjects.Decisions(), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(61 * time.Second)
	if err := w.poll(ctx); err != nil {
		t.Fatal(err)
	}
	msgs, age := w.lag()
	if msgs != 3 || age != 61*time.Second {
		t.Fatalf("lag %d messages for %s; want 3 for 1m1s", msgs, age)
	}
	const want = "read models behind the aggregate log by 3 messages (applied through sequence 1) for 1m1s, over the 1m0s bound"
	if err := w.Err(); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("health: %v; want %q", err, want)
	}
	// Having applied what was seen first, the read models are behind the
	// newer end only since the poll that finds that.
	applied.Store(3)
	if err := w.Err(); err != nil {
		t.Fatalf("health once sequence 3 is applied: %v", err)
	}
	clock = clock.Add(time.Second)
	if err := w.poll(ctx); err != nil {
		t.Fatal(err)
	}
	if msgs, age := w.lag(); msgs != 1 || age != 0 {
		t.Fatalf("lag %d messages for %s; want 1 for 0s", msgs, age)
	}
	applied.Store(4)
	if msgs, age := w.lag(); msgs != 0 || age != 0 || w.Err() != nil {
		t.Fatalf("caught up: lag %d messages for %s, health %v", msgs, age, w.Err())
	}
}

func TestMetricsShowTheProjectionLagFallingToZero(t *testing.T) {
	nt := testutil.StartNATS(t)
	cfg := testConfig(t.TempDir(), nt.URL())
	cfg.MaxProjectionLag = time.Minute
	n := startNode(t, cfg)
	pub := jetlog.NewPublisher(nt.JS, jetlog.DefaultSubjects)
	for i := range 2 {
		if _, err := pub.Publish(context.Background(), testutil.Replicated(i, 1<<10, true)); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 30*time.Second, "the lag metrics to say the read models caught up", func() bool {
		resp, err := http.Get("http://" + n.HTTPAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		body := string(b)
		return n.Projector.Seq() > 0 && strings.Contains(body, "\nferry_projection_lag_messages 0\n") &&
			strings.Contains(body, "\nferry_projection_lag_seconds 0\n")
	})
	if err := n.health(); err != nil {
		t.Fatalf("health: %v", err)
	}
}

func TestBehindAsksTheLeaderForTheLogsEnd(t *testing.T) {
	nt := aggLog(t, 3)
	ctx := context.Background()
	w := newLagWatch(nt.JS, func() uint64 { return 0 }, time.Minute)
	if behind, err := w.behind(ctx, 2); err != nil || !behind {
		t.Fatalf("applied 2 of 3: behind %v, %v", behind, err)
	}
	if behind, err := w.behind(ctx, 3); err != nil || behind {
		t.Fatalf("applied 3 of 3: behind %v, %v", behind, err)
	}
}
