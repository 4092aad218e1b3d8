package node

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/client"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/internal/urlpolicy"
	"github.com/ferry-dev/ferry/jetlog"
)

// flakySource serves CARs by path, answering 500 to the first fail
// requests of each (all of them when fail < 0), and counts the requests.
type flakySource struct {
	srv  *httptest.Server
	cars map[string][]byte
	fail int64
	hits atomic.Int64
}

func newFlakySource(t *testing.T, fail int64, cars ...testutil.CAR) *flakySource {
	f := &flakySource{cars: map[string][]byte{}, fail: fail}
	for _, c := range cars {
		f.cars["/"+c.CID.String()+".car"] = c.Bytes
	}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := f.hits.Add(1)
		if f.fail < 0 || n <= f.fail {
			http.Error(w, "the disk of this source is on fire", http.StatusInternalServerError)
			return
		}
		w.Write(f.cars[r.URL.Path])
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// allow is the fetch policy that lets the node's workers reach the source
// on loopback.
func (f *flakySource) allow() *urlpolicy.Policy {
	return urlpolicy.Default.With(urlpolicy.AddrPortRule(netip.MustParseAddrPort(strings.TrimPrefix(f.srv.URL, "http://"))))
}

// A CAR whose piece fetch keeps failing is QUEUED with the piece work's
// last error, its attempt, the queue's limit and the next retry, read
// from what the worker recorded in NATS, not from serve's log.
func TestQueuedCarShowsItsPieceWorkFailure(t *testing.T) {
	nt := testutil.StartNATS(t)
	car := testutil.MakeCAR(t, 4242, 9000)
	src := newFlakySource(t, -1, car)
	cfg := testConfig(t.TempDir(), nt.URL())
	cfg.Pieces.Workers = 1
	cfg.Pieces.MaxDeliver = 3
	backoff := 3 * time.Second
	cfg.Pieces.Backoff = []time.Duration{backoff}
	cfg.Pieces.Fetch.Policy = src.allow()
	n := startNode(t, cfg)
	api := client.NewHTTP(n.HTTPAddr())
	ctx := context.Background()
	pub := jetlog.NewPublisher(nt.JS, jetlog.DefaultSubjects)
	if _, err := pub.Publish(ctx, car.Event(src.srv.URL, false)); err != nil {
		t.Fatal(err)
	}

	testutil.Eventually(t, 30*time.Second, "the QUEUED CAR to show its failed attempt", func() bool {
		v, err := api.Car(ctx, car.CID.String())
		return err == nil && v.Work != nil
	})
	v, err := api.Car(ctx, car.CID.String())
	if err != nil {
		t.Fatal(err)
	}
	w := v.Work
	if v.State != aggregator.Queued {
		t.Fatalf("state %s, want QUEUED: %+v", v.State, v)
	}
	if !strings.Contains(w.LastError, "HTTP 500") {
		t.Errorf("lastError %q does not say what the source answered (500)", w.LastError)
	}
	if got := src.hits.Load(); w.Attempt < 1 || int64(w.Attempt) > got {
		t.Errorf("attempt %d, but the source was asked %d times", w.Attempt, got)
	}
	if w.MaxAttempts != cfg.Pieces.MaxDeliver {
		t.Errorf("maxAttempts %d, want the queue's %d", w.MaxAttempts, cfg.Pieces.MaxDeliver)
	}
	if got := w.NextRetryAt.Sub(w.At); got != backoff {
		t.Errorf("next retry %s after the attempt, want the backoff %s", got, backoff)
	}
	if w.Dead || w.Worker == "" {
		t.Errorf("dead %v, worker %q: want a live item and the worker's name", w.Dead, w.Worker)
	}

	// The last attempt fails: the CAR is rejected with the same reason.
	testutil.Eventually(t, 30*time.Second, "the CAR to be rejected", func() bool {
		v, err := api.Car(ctx, car.CID.String())
		return err == nil && v.State == aggregator.Rejected
	})
	v, _ = api.Car(ctx, car.CID.String())
	if v.Work != nil || !strings.Contains(v.Reason, "gave up after 3 attempts") || !strings.Contains(v.Reason, "HTTP 500") {
		t.Fatalf("rejected CAR %+v: want the reason of the last attempt and no work", v)
	}
	if got := src.hits.Load(); got < int64(cfg.Pieces.MaxDeliver) {
		t.Errorf("the source was asked %d times, fewer than MaxDeliver %d", got, cfg.Pieces.MaxDeliver)
	}
}

// Once the piece work succeeds its record is gone: a CAR that recovered
// does not carry an old error.
func TestPieceWorkRecordIsRemovedOnSuccess(t *testing.T) {
	nt := testutil.StartNATS(t)
	car := testutil.MakeCAR(t, 4343, 9000)
	src := newFlakySource(t, 1, car)
	cfg := testConfig(t.TempDir(), nt.URL())
	cfg.Pieces.Workers = 1
	cfg.Pieces.Backoff = []time.Duration{2 * time.Second}
	cfg.Pieces.Fetch.Policy = src.allow()
	n := startNode(t, cfg)
	api := client.NewHTTP(n.HTTPAddr())
	ctx := context.Background()
	pub := jetlog.NewPublisher(nt.JS, jetlog.DefaultSubjects)
	if _, err := pub.Publish(ctx, car.Event(src.srv.URL, false)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "the failed first attempt to show", func() bool {
		v, err := api.Car(ctx, car.CID.String())
		return err == nil && v.Work != nil && v.Work.Attempt == 1
	})
	testutil.Eventually(t, 30*time.Second, "the CAR to get its piece", func() bool {
		v, err := api.Car(ctx, car.CID.String())
		return err == nil && v.Piece == car.Piece.MustV2().String()
	})
	kv, err := nt.JS.KeyValue(ctx, jetlog.BucketAttempts)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the attempt record to be removed", func() bool {
		keys, err := kv.ListKeys(ctx)
		if err != nil {
			return false
		}
		n := 0
		for range keys.Keys() {
			n++
		}
		return n == 0
	})
}
