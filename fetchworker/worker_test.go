package fetchworker_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/carstore"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/fetch"
	"github.com/ferry-dev/ferry/fetchworker"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/internal/urlpolicy"
	"github.com/ferry-dev/ferry/jetlog"
)

// local lets fetchers reach the tests' servers on 127.0.0.1.
var local = urlpolicy.New(urlpolicy.Config{AllowPrivate: true})

// aCID is a CID no test server has.
const aCID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"

func failures(evs []events.Event) []*events.PinFailed {
	var out []*events.PinFailed
	for _, ev := range evs {
		if f, ok := ev.(*events.PinFailed); ok {
			out = append(out, f)
		}
	}
	return out
}

func newFetcher(t *testing.T, gateways ...string) *fetch.Fetcher {
	t.Helper()
	store, err := carstore.OpenDir(t.TempDir(), "http://127.0.0.1:1/cars")
	if err != nil {
		t.Fatal(err)
	}
	return fetch.New(fetch.Config{Gateways: gateways, Policy: local, Store: store, Timeout: 5 * time.Second, StallTimeout: time.Second})
}

// TestAnUnavailableSourceIsRetriedThenDeadLettered: a gateway that answers
// 503 is tried MaxDeliver times, by attempt, then the item is kept as a
// dead letter and the pin fails with the reason.
func TestAnUnavailableSourceIsRetriedThenDeadLettered(t *testing.T) {
	nt := testutil.StartNATS(t)
	var hits atomic.Int32
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}))
	t.Cleanup(gw.Close)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := fetchworker.Enqueue(ctx, nt.JS, jetlog.DefaultSubjects, fetchworker.Item{CID: aCID, Since: time.Now()}); err != nil {
		t.Fatal(err)
	}
	p := fetchworker.New(nt.JS, fetchworker.Config{
		Fetcher: newFetcher(t, gw.URL), MaxDeliver: 3, Backoff: []time.Duration{50 * time.Millisecond},
	})
	go p.Run(ctx)
	testutil.Eventually(t, 30*time.Second, "the pin failed", func() bool { return len(failures(testutil.Inputs(t, nt.JS))) > 0 })
	evs := testutil.Inputs(t, nt.JS)
	var attempts []int
	for _, ev := range evs {
		if f, ok := ev.(*events.PinFetching); ok {
			attempts = append(attempts, f.Attempt)
		}
	}
	if len(attempts) != 3 || attempts[0] != 1 || attempts[2] != 3 {
		t.Fatalf("pin.fetching attempts %v, want 1, 2, 3", attempts)
	}
	f := failures(evs)
	if len(f) != 1 || f[0].CID != aCID || !strings.HasPrefix(f[0].Reason, "gave up after 3 attempts: ") {
		t.Fatalf("pin.failed %+v, want one for %s that gave up after 3 attempts", f, aCID)
	}
	letters, err := fetchworker.DeadLetters(ctx, nt.JS, jetlog.DefaultSubjects, "")
	if err != nil || len(letters) != 1 || letters[0].Item.CID != aCID {
		t.Fatalf("dead letters %+v %v, want the CID's", letters, err)
	}
	if n := testutil.Msgs(t, nt.JS, jetlog.StreamFetch); n != 0 {
		t.Fatalf("%d items still waiting", n)
	}
}

// TestCancelTakesAWaitingItemOffTheQueue: a cancelled CID is not fetched
// by a worker that starts later, and enqueuing it again brings it back.
func TestCancelTakesAWaitingItemOffTheQueue(t *testing.T) {
	nt := testutil.StartNATS(t)
	ctx := context.Background()
	it := fetchworker.Item{CID: aCID, Since: time.Now()}
	if err := fetchworker.Enqueue(ctx, nt.JS, jetlog.DefaultSubjects, it); err != nil {
		t.Fatal(err)
	}
	if err := fetchworker.Cancel(ctx, nt.JS, jetlog.DefaultSubjects, aCID); err != nil {
		t.Fatal(err)
	}
	if n := testutil.Msgs(t, nt.JS, jetlog.StreamFetch); n != 0 {
		t.Fatalf("%d items waiting after cancel", n)
	}
	if err := fetchworker.Enqueue(ctx, nt.JS, jetlog.DefaultSubjects, it); err != nil {
		t.Fatal(err)
	}
	if n := testutil.Msgs(t, nt.JS, jetlog.StreamFetch); n != 1 {
		t.Fatalf("%d items waiting after a new request, want 1", n)
	}
	if err := fetchworker.Enqueue(ctx, nt.JS, jetlog.DefaultSubjects, fetchworker.Item{CID: "not a cid"}); err == nil {
		t.Fatal("an item with no CID was queued")
	}
}
