package spade

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
)

// heldEngine is a deal engine that holds every offer until the test
// releases it, counting the offers it holds at once.
type heldEngine struct {
	*httptest.Server
	release chan struct{}
	stop    chan struct{}
	mu      sync.Mutex
	held    int
	most    int
}

func newHeldEngine(t *testing.T) *heldEngine {
	e := &heldEngine{release: make(chan struct{}), stop: make(chan struct{})}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.held++
		e.most = max(e.most, e.held)
		e.mu.Unlock()
		defer func() { e.mu.Lock(); e.held--; e.mu.Unlock() }()
		select {
		case <-e.release:
			writeJSON(w, http.StatusOK, map[string]bool{"accepted": true})
		case <-e.stop:
			writeError(w, http.StatusServiceUnavailable, "stopping")
		}
	}))
	t.Cleanup(func() { close(e.stop); e.Close() })
	return e
}

func (e *heldEngine) counts() (held, most int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.held, e.most
}

// TestDealerWorkersZeroMeansTwoOtherValuesAsGiven: the dealer makes as
// many offers at once as it has workers, two when Workers is zero, and
// every READY aggregate of the read models is offered and recorded.
func TestDealerWorkersZeroMeansTwoOtherValuesAsGiven(t *testing.T) {
	tests := []struct {
		name    string
		workers int
		want    int
	}{
		{"zero workers means two", 0, 2},
		{"one worker makes one offer at a time", 1, 1},
		{"three workers make three offers at once", 3, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, SimConfig{})
			rm := f.newReadModels(t)
			for i, c := range f.cars {
				rm.aggregate(uint64(i+1), []testCar{c}, true)
			}
			engine := newHeldEngine(t)
			published := make(chan events.Event, len(f.cars))
			d := &Dealer{
				Offerer: &Offerer{URL: engine.URL, Backoff: fastBackoff}, Store: rm.read(),
				ReportURL: f.rptSrv.URL + "/v1/deals/report", Workers: tt.workers,
				Publish: func(_ context.Context, ev events.Event) error { published <- ev; return nil },
			}
			ctx, cancel := context.WithCancel(t.Context())
			stopped := make(chan struct{})
			go func() { d.Run(ctx); close(stopped) }()
			t.Cleanup(func() { cancel(); <-stopped })
			if err := d.EnqueueReady(); err != nil {
				t.Fatal(err)
			}

			testutil.Eventually(t, 20*time.Second, "the workers' offers to be held at once", func() bool {
				held, _ := engine.counts()
				return held >= tt.want
			})
			for range f.cars {
				select {
				case engine.release <- struct{}{}:
				case <-time.After(20 * time.Second):
					t.Fatal("an offer did not arrive within 20s")
				}
			}
			offered := map[uint64]bool{}
			for range f.cars {
				select {
				case ev := <-published:
					o, ok := ev.(*events.DealOffered)
					if !ok {
						t.Fatalf("published %T %+v, want deal.offered", ev, ev)
					}
					offered[o.Aggregate] = true
				case <-time.After(20 * time.Second):
					t.Fatal("an offer outcome was not published within 20s")
				}
			}
			if got, want := len(offered), len(f.cars); got != want {
				t.Fatalf("%d aggregates offered, want %d: %v", got, want, offered)
			}
			if _, most := engine.counts(); most != tt.want {
				t.Fatalf("Workers %d: %d offers held at once, want %d", tt.workers, most, tt.want)
			}
		})
	}
}

// TestAFailedOfferRecordsTheEnginesAnswerAndTheRetry: deal.offer_failed
// carries the engine's HTTP status and, when the dealer will offer again
// (a transient failure), when; a refusal is not offered again.
func TestAFailedOfferRecordsTheEnginesAnswerAndTheRetry(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		retried bool
	}{
		{"a 503 is offered again after RetryAfter", http.StatusServiceUnavailable, true},
		{"a 409 refusal is not offered again", http.StatusConflict, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, SimConfig{})
			rm := f.newReadModels(t)
			rm.aggregate(1, f.cars[:1], true)
			engine := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				writeError(w, tt.status, "engine says no")
			}))
			t.Cleanup(engine.Close)
			published := make(chan events.Event, 16)
			retry := time.Hour // long: the test sees one outcome
			d := &Dealer{
				Offerer: &Offerer{URL: engine.URL, Backoff: fastBackoff, MaxAttempts: 2}, Store: rm.read(),
				ReportURL: f.rptSrv.URL + "/v1/deals/report", RetryAfter: retry,
				Publish: func(_ context.Context, ev events.Event) error { published <- ev; return nil },
			}
			ctx, cancel := context.WithCancel(t.Context())
			stopped := make(chan struct{})
			go func() { d.Run(ctx); close(stopped) }()
			t.Cleanup(func() { cancel(); <-stopped })
			before := time.Now()
			d.Enqueue(1)
			var failed *events.OfferFailed
			select {
			case ev := <-published:
				failed, _ = ev.(*events.OfferFailed)
			case <-time.After(20 * time.Second):
				t.Fatal("no outcome within 20s")
			}
			if failed == nil || failed.Status != tt.status || !strings.Contains(failed.Reason, "engine says no") {
				t.Fatalf("outcome %+v, want deal.offer_failed with the engine's %d and reason", failed, tt.status)
			}
			if got := !failed.RetryAt.IsZero(); got != tt.retried {
				t.Fatalf("retryAt %s: retried %v, want %v", failed.RetryAt, got, tt.retried)
			}
			if tt.retried && (failed.RetryAt.Before(before.Add(retry)) || failed.RetryAt.After(time.Now().Add(retry))) {
				t.Fatalf("retryAt %s, want RetryAfter (%s) after the failure", failed.RetryAt, retry)
			}
		})
	}
}
