package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/client"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/internal/urlpolicy"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/wire"
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

// pieceWorkNode starts ferry with one piece worker that may reach src,
// tries an item attempts times backoff apart, and publishes car at src
// without its piece.
func pieceWorkNode(t *testing.T, src *flakySource, car testutil.CAR, attempts int, backoff time.Duration) (*testutil.NATS, *client.HTTP, Config) {
	nt := testutil.StartNATS(t)
	cfg := testConfig(t.TempDir(), nt.URL())
	cfg.Pieces.Workers, cfg.Pieces.MaxDeliver, cfg.Pieces.Backoff = 1, attempts, []time.Duration{backoff}
	cfg.Pieces.Fetch.Policy = src.allow()
	n := startNode(t, cfg)
	pub := jetlog.NewPublisher(nt.JS, jetlog.DefaultSubjects)
	if _, err := pub.Publish(context.Background(), car.Event(src.srv.URL, false)); err != nil {
		t.Fatal(err)
	}
	return nt, client.NewHTTP(n.HTTPAddr()), cfg
}

// A CAR whose piece fetch keeps failing is QUEUED with the piece work's
// last error, its attempt, the queue's limit and the next retry, read
// from what the worker recorded in NATS, not from serve's log.
func TestQueuedCarShowsItsPieceWorkFailure(t *testing.T) {
	car := testutil.MakeCAR(t, 4242, 9000)
	src := newFlakySource(t, -1, car)
	backoff := 3 * time.Second
	_, api, cfg := pieceWorkNode(t, src, car, 3, backoff)
	ctx := context.Background()

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
	// The dashboard says the same: on the CAR's page and in the overview's
	// oldest waiting CARs.
	for _, page := range []string{"/ui/cars/" + car.CID.String(), "/"} {
		resp, err := http.Get(api.Base + page)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "HTTP 500") {
			t.Errorf("GET %s: %d, and the page does not show the piece work's error (HTTP 500):\n%s", page, resp.StatusCode, body)
		}
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
	car := testutil.MakeCAR(t, 4343, 9000)
	src := newFlakySource(t, 1, car)
	nt, api, _ := pieceWorkNode(t, src, car, 5, 2*time.Second)
	ctx := context.Background()
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

// The batch status calls answer each CID as GET /v1/cars/{cid} does, in
// the order asked, unknown and malformed CIDs in their own entries;
// they need the read token and bound what they take.
func TestBatchStatusAnswersEachCIDAsTheSingleCall(t *testing.T) {
	nt := testutil.StartNATS(t)
	cfg := testConfig(t.TempDir(), nt.URL())
	cfg.Pieces.Workers = -1
	cfg.ReadToken = "reader"
	n := startNode(t, cfg)
	ctx := context.Background()
	pub := jetlog.NewPublisher(nt.JS, jetlog.DefaultSubjects)
	var asked []string
	for i := range 5 {
		ev := testutil.Replicated(7000+i, 4000, i != 2) // CAR 2 waits for its piece
		if _, err := pub.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
		asked = append(asked, ev.Car)
	}
	unknown := testutil.CarCID(999999).String()
	asked = append(asked, unknown, "not-a-cid", asked[0])
	api := client.NewHTTP(n.HTTPAddr())
	api.Token = cfg.ReadToken
	testutil.Eventually(t, 30*time.Second, "the CARs to be known", func() bool {
		v, err := api.Car(ctx, asked[4])
		return err == nil && v.State != ""
	})

	got, err := api.Cars(ctx, asked)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(asked) {
		t.Fatalf("%d answers for %d CIDs", len(got), len(asked))
	}
	for i, a := range got {
		if a.CID != asked[i] {
			t.Fatalf("answer %d is of %s, asked %s", i, a.CID, asked[i])
		}
		single, err := api.Car(ctx, asked[i])
		var apiErr *client.APIError
		switch {
		case err == nil:
			if a.Status != http.StatusOK || !reflect.DeepEqual(a.View, single) {
				t.Errorf("%s: batch %+v, single %+v", asked[i], a, single)
			}
		case errors.As(err, &apiErr):
			if a.Status != apiErr.Status || a.View != nil || a.Error == "" {
				t.Errorf("%s: batch %+v, single answered %d %s", asked[i], a, apiErr.Status, apiErr.Message)
			}
		default:
			t.Fatal(err)
		}
	}
	if got[2].View.State != aggregator.Queued || got[5].Status != http.StatusNotFound || got[6].Status != http.StatusBadRequest {
		t.Fatalf("QUEUED, unknown and malformed answered %+v, %+v, %+v", got[2], got[5], got[6])
	}

	// GET with the CIDs in the query answers the same.
	q := url.Values{"cid": asked}
	var viaGet struct {
		Cars []wire.CarStatus `json:"cars"`
	}
	if code, _ := psa(t, n, http.MethodGet, "/v1/cars?"+q.Encode(), cfg.ReadToken, nil, &viaGet); code != http.StatusOK || !reflect.DeepEqual(viaGet.Cars, got) {
		t.Fatalf("GET answered %d %+v, POST %+v", code, viaGet.Cars, got)
	}
	if code, _ := psa(t, n, http.MethodGet, "/v1/cars?"+q.Encode(), "", nil, nil); code != http.StatusUnauthorized {
		t.Fatalf("GET without the read token answered %d", code)
	}

	// Over the limit: refused as a whole, saying the limit.
	many := make([]string, wire.MaxStatusCIDs+1)
	for i := range many {
		many[i] = asked[0]
	}
	body, _ := json.Marshal(map[string][]string{"cids": many})
	code, msg := post(t, n, "/v1/cars/status", cfg.ReadToken, string(body))
	if code != http.StatusBadRequest || !strings.Contains(msg, fmt.Sprintf("send 1 to %d CIDs, not %d", wire.MaxStatusCIDs, len(many))) {
		t.Fatalf("%d CIDs answered %d %s", len(many), code, msg)
	}
	big := append([]byte(`{"cids":["`), bytes.Repeat([]byte("b"), 600<<10)...)
	if code, msg := post(t, n, "/v1/cars/status", cfg.ReadToken, string(big)+`"]}`); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("a body of 600 KiB answered %d %s", code, msg)
	}
	// The client splits a longer list into calls the server takes.
	all, err := api.Cars(ctx, many)
	if err != nil || len(all) != len(many) || all[len(many)-1].View.Car != asked[0] {
		t.Fatalf("client.Cars of %d CIDs: %d answers, %v", len(many), len(all), err)
	}
}

// recordingEngine is a deal engine that refuses offers with 409 and a
// reason until accept is set, then takes them (and never reports), and
// counts the offers it took.
type recordingEngine struct {
	srv    *httptest.Server
	accept atomic.Bool
	taken  atomic.Int64
}

const engineRefusal = "pieces of this size are not wanted here"

func newRecordingEngine(t *testing.T) *recordingEngine {
	e := &recordingEngine{}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !e.accept.Load() {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusConflict)
			json.NewEncoder(w).Encode(map[string]string{"error": engineRefusal})
			return
		}
		e.taken.Add(1)
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(e.srv.Close)
	return e
}

// An aggregate shows what became of its offers: the engine's refusal
// (status and reason) and when, then once offered the time of the offer
// and when the deal clock offers it again, which it then does.
func TestAnAggregateShowsItsOffersAndWhenItIsOfferedAgain(t *testing.T) {
	engine := newRecordingEngine(t)
	n, nt, dir := dealClockNode(t, engine.srv.URL+"/offers")
	api := client.NewHTTP(n.HTTPAddr())
	ctx := context.Background()
	publishCars(t, n, nt, makeCars(t, dir, 0, 2))

	var refused *wire.AggregateView
	testutil.Eventually(t, 30*time.Second, "the refused offer to show", func() bool {
		for _, a := range aggsIn(t, api, aggregator.Ready) {
			if a.OfferFailures > 0 {
				refused = &a
				return true
			}
		}
		return false
	})
	if refused.EngineStatus != http.StatusConflict || !strings.Contains(refused.OfferError, engineRefusal) ||
		refused.OfferFailedAt.IsZero() || !refused.ReofferAt.IsZero() || refused.Offers != 0 {
		t.Fatalf("refused aggregate %+v: want the engine's 409 and reason, no re-offer (a refusal waits for the operator)", refused)
	}

	engine.accept.Store(true)
	before := time.Now()
	if err := api.ReofferAggregate(ctx, refused.ID); err != nil {
		t.Fatal(err)
	}
	var pending *wire.AggregateView
	testutil.Eventually(t, 30*time.Second, "the offer to be taken", func() bool {
		a, err := api.Aggregate(ctx, fmt.Sprint(refused.ID), -1, 0)
		pending = a
		return err == nil && a.State == aggregator.DealPending
	})
	timeout := n.cfg.Fold.DealTimeout
	if pending.Offers != 1 || pending.OfferError != "" || pending.EngineStatus != 0 || pending.OfferFailures != 1 {
		t.Fatalf("pending aggregate %+v: want one offer taken, the one failure counted and its error cleared", pending)
	}
	// The fold's clock is its last tick (every 20 ms), not the wall's.
	if pending.LastOfferAt.Before(before.Add(-time.Second)) || pending.LastOfferAt.After(time.Now()) {
		t.Fatalf("lastOfferAt %s, the reoffer was asked at %s", pending.LastOfferAt, before)
	}
	if got := pending.ReportDueAt.Sub(pending.LastOfferAt); got != timeout {
		t.Fatalf("report due %s after the offer, want the deal timeout %s", got, timeout)
	}

	// No report comes: the deal clock offers it again once due.
	firstDue := pending.ReportDueAt
	testutil.Eventually(t, 30*time.Second, "the second offer", func() bool {
		a, err := api.Aggregate(ctx, fmt.Sprint(refused.ID), -1, 0)
		pending = a
		return err == nil && a.Offers == 2 && a.State == aggregator.DealPending
	})
	if pending.LastOfferAt.Before(firstDue) || !pending.ReportDueAt.Equal(pending.LastOfferAt.Add(timeout)) {
		t.Fatalf("after the second offer %+v", pending)
	}
	if engine.taken.Load() < 2 {
		t.Fatalf("the engine took %d offers, the aggregate says 2", engine.taken.Load())
	}
}
