package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/client"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/spade"
	"github.com/ferry-dev/ferry/wire"
	"github.com/nats-io/nats.go/jetstream"
)

const reportToken = "report-secret"

// dealSetup is ferry with the deal engine simulator and a directory of
// real CARs served over HTTP by ferry itself.
type dealSetup struct {
	n  *Node
	nt *testutil.NATS // nil on the embedded server
	// js is what the test publishes CARs and reads receipts with.
	js   jetstream.JetStream
	api  *client.HTTP
	cars []testutil.CAR
	sim  *spade.Simulator
}

func startDeals(t *testing.T, count int, sim spade.SimConfig, oracle string) *dealSetup {
	t.Helper()
	nt := testutil.StartNATS(t)
	d := startDealsOn(t, nt.URL(), count, sim, oracle)
	d.nt, d.js = nt, nt.JS
	return d
}

// startDealsOn is startDeals on the NATS at natsURL, or on the embedded
// server with its users when natsURL is empty.
func startDealsOn(t *testing.T, natsURL string, count int, sim spade.SimConfig, oracle string, opts ...func(*Config)) *dealSetup {
	t.Helper()
	sim.ReportToken = reportToken
	sim.ReportBackoff = spade.Backoff{First: 10 * time.Millisecond, Max: 100 * time.Millisecond}
	s, err := spade.NewSimulator(sim)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() { srv.Close(); s.Close() })
	dir := t.TempDir()
	cfg := testConfig(t.TempDir(), natsURL)
	cfg.CarStore, cfg.ReportToken = dir, reportToken
	if testing.Verbose() {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	cfg.Deals = DealConfig{Engine: srv.URL + "/offers", RetryAfter: 50 * time.Millisecond, Oracle: oracle, OracleInterval: 50 * time.Millisecond}
	for _, o := range opts {
		o(&cfg)
	}
	n := startNode(t, cfg)
	d := &dealSetup{n: n, js: n.JS, api: client.NewHTTP(n.HTTPAddr()), sim: s}
	for i := range count {
		c := testutil.MakeCAR(t, uint64(1000+i), 2000+i*7717%50000)
		c.WriteTo(t, dir)
		d.cars = append(d.cars, c)
	}
	return d
}

func (d *dealSetup) publishAll(t *testing.T) {
	t.Helper()
	pub := jetlog.NewPublisher(d.js, jetlog.DefaultSubjects)
	for _, c := range d.cars {
		if _, err := pub.Publish(context.Background(), c.Event("http://"+d.n.HTTPAddr()+"/cars", true)); err != nil {
			t.Fatal(err)
		}
	}
}

// waitProcessed closes whatever is INGESTING until every CAR has deals.
func (d *dealSetup) waitProcessed(t *testing.T, timeout time.Duration) {
	t.Helper()
	testutil.Eventually(t, timeout, "every CAR to reach DEAL_PROCESSED", func() bool {
		for _, c := range d.cars {
			v, err := d.api.Car(context.Background(), c.CID.String())
			if err != nil {
				return false
			}
			if v.State == aggregator.Aggregating {
				_ = d.api.CloseAggregate(context.Background(), v.Aggregate)
				return false
			}
			if v.State != aggregator.DealProcessed {
				return false
			}
		}
		return true
	})
}

func (d *dealSetup) receipts(t *testing.T) map[string][]wire.Receipt {
	t.Helper()
	got := map[string][]wire.Receipt{}
	err := client.SubscribeReceipts(context.Background(), d.js, client.From{Once: true}, func(_ uint64, r wire.Receipt) error {
		got[r.Car] = append(got[r.Car], r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestEveryCarEndsWithADealReceiptWhoseProofVerifies(t *testing.T) {
	d := startDeals(t, 40, spade.SimConfig{Delay: 10 * time.Millisecond}, "")
	d.publishAll(t)
	d.waitProcessed(t, 60*time.Second)
	testutil.Eventually(t, 20*time.Second, "a receipt for every CAR", func() bool { return len(d.receipts(t)) == len(d.cars) })
	rs := d.receipts(t)
	for _, c := range d.cars {
		r := rs[c.CID.String()]
		if len(r) != 1 || len(r[0].Deals) == 0 || r[0].Inclusion == nil {
			t.Fatalf("receipts of %s: %+v", c.CID, r)
		}
		agg, err := d.api.Aggregate(context.Background(), fmt.Sprint(r[0].Aggregate), -1, 0)
		if err != nil {
			t.Fatal(err)
		}
		verifyProof(t, r[0].Inclusion.CBOR, c.Piece, agg.PieceV1)
		if r[0].Piece != c.Piece.MustV2().String() {
			t.Fatalf("receipt piece %s, want %s", r[0].Piece, c.Piece.MustV2())
		}
	}
	// The simulator rebuilt each aggregate from the downloads and agreed.
	for _, o := range d.sim.Offers() {
		if o.Status != events.StatusPublished {
			t.Fatalf("simulator outcome %+v", o)
		}
	}
	v, _ := d.api.Car(context.Background(), d.cars[0].CID.String())
	if len(v.Deals) == 0 {
		t.Fatalf("GET /v1/cars shows no deals: %+v", v)
	}
	checkManifest(t, d, v.Aggregate)
	checkLogs(t, d.nt.JS, testDeal)
}

// checkManifest reads GET /v1/aggregates/{id}/manifest: the FRC-58
// manifest of the aggregate's piece with its CARs' pieces and URLs in
// layout order.
func checkManifest(t *testing.T, d *dealSetup, id uint64) {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://%s/v1/aggregates/%d/manifest", d.n.HTTPAddr(), id))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m spade.Manifest
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET the manifest of aggregate %d: %s, %v", id, resp.Status, err)
	}
	agg, cars, _, err := d.n.Store.Layout(id)
	if err != nil {
		t.Fatal(err)
	}
	if m.Aggregate != agg.Piece || len(m.Pieces) != len(cars) {
		t.Fatalf("manifest of %s with %d pieces, want %s with %d", m.Aggregate, len(m.Pieces), agg.Piece, len(cars))
	}
	for i, c := range cars {
		if p := m.Pieces[i]; p.PieceCID != c.Piece || !slices.Equal(p.Sources, c.URLs) {
			t.Fatalf("manifest piece_list[%d] = %+v, want %s from %v", i, p, c.Piece, c.URLs)
		}
	}
}

func TestAFailedDealIsReaggregatedAndSucceeds(t *testing.T) {
	// With half the offers failing, some aggregate fails first; its CARs
	// are aggregated again and every CAR still ends with a deal.
	d := startDeals(t, 30, spade.SimConfig{Delay: 5 * time.Millisecond, FailureRate: 0.5, Seed: 3}, "")
	d.publishAll(t)
	d.waitProcessed(t, 90*time.Second)
	failed, err := d.api.Aggregates(context.Background(), aggregator.DealFailed, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(failed.Aggregates) == 0 {
		t.Fatal("no aggregate failed; the test did not exercise the failure path (change the seed)")
	}
	if !strings.Contains(failed.Aggregates[0].Reason, "simulated failure") {
		t.Fatalf("failed aggregate reason %q", failed.Aggregates[0].Reason)
	}
	testutil.Eventually(t, 20*time.Second, "a receipt for every CAR", func() bool { return len(d.receipts(t)) == len(d.cars) })
	checkLogs(t, d.nt.JS, testDeal)
}

func TestForgedDuplicateAndUnknownReportsAreTurnedAway(t *testing.T) {
	d := startDeals(t, 5, spade.SimConfig{Delay: 5 * time.Millisecond}, "")
	d.publishAll(t)
	d.waitProcessed(t, 60*time.Second)
	v, _ := d.api.Car(context.Background(), d.cars[0].CID.String())
	agg, _ := d.api.Aggregate(context.Background(), fmt.Sprint(v.Aggregate), -1, 0)
	known, _ := json.Marshal(events.DealReport{Aggregate: agg.Piece, Status: "published", Deals: agg.Deals})
	unknown := `{"aggregate":"424242","status":"published","deals":[{"provider":"f01000","dealId":1}]}`
	cases := []struct {
		name, token, body string
		status            int
		msg               string
	}{
		{"a report without a token is refused", "", string(known), 401, "bearer"},
		{"a report with a wrong token is refused", "guess", string(known), 401, "bearer"},
		{"a report repeating known deals is ignored", reportToken, string(known), 200, "already has these deals"},
		{"a report for an unknown aggregate is 404", reportToken, unknown, 404, "unknown aggregate"},
		{"a malformed report is 400", reportToken, `{"status":"maybe"}`, 400, "bad report"},
		{"a failure after deals is ignored", reportToken, `{"aggregate":"` + agg.Piece + `","status":"failed","reason":"late"}`, 200, "changes nothing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", "http://"+d.n.HTTPAddr()+"/v1/deals/report", strings.NewReader(tc.body))
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.msg) {
				t.Fatalf("got %d %s, want %d mentioning %q", resp.StatusCode, body, tc.status, tc.msg)
			}
		})
	}
	after, _ := d.api.Aggregate(context.Background(), fmt.Sprint(v.Aggregate), -1, 0)
	if after.State != aggregator.DealProcessed || len(after.Deals) != len(agg.Deals) {
		t.Fatalf("aggregate changed: %+v", after)
	}
}

func TestOraclePollingPicksUpANewDealOnce(t *testing.T) {
	var mu sync.Mutex
	var doc spade.Oracle
	oracle := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		_ = json.NewEncoder(w).Encode(doc)
	}))
	t.Cleanup(oracle.Close)
	d := startDeals(t, 5, spade.SimConfig{Delay: 5 * time.Millisecond}, oracle.URL)
	d.publishAll(t)
	d.waitProcessed(t, 60*time.Second)
	v, _ := d.api.Car(context.Background(), d.cars[0].CID.String())
	agg, _ := d.api.Aggregate(context.Background(), fmt.Sprint(v.Aggregate), -1, 0)
	mu.Lock()
	doc = spade.Oracle{StateEpoch: 100, ActiveReplicas: []spade.Replica{{PieceCID: agg.PieceV1, PieceLog2Size: 20,
		Contracts: []spade.Contract{{ProviderID: 7777, LegacyMarketID: 99, LegacyMarketEndEpoch: 5000}}}}}
	mu.Unlock()
	testutil.Eventually(t, 20*time.Second, "the oracle's deal on the aggregate", func() bool {
		a, _ := d.api.Aggregate(context.Background(), fmt.Sprint(v.Aggregate), -1, 0)
		return a != nil && len(a.Deals) == len(agg.Deals)+1
	})
	time.Sleep(300 * time.Millisecond) // several more polls
	a, _ := d.api.Aggregate(context.Background(), fmt.Sprint(v.Aggregate), -1, 0)
	if got := a.Deals[len(a.Deals)-1]; len(a.Deals) != len(agg.Deals)+1 || got.Provider != "f07777" || got.DealID != 99 {
		t.Fatalf("deals after polling: %+v", a.Deals)
	}
	// The replica deal produced a second receipt per CAR of the aggregate.
	rs := d.receipts(t)
	testutil.Eventually(t, 20*time.Second, "a second receipt", func() bool {
		rs = d.receipts(t)
		return len(rs[v.Car]) == 2
	})
	if r := rs[v.Car][1]; len(r.Deals) != 1 || r.Deals[0].DealID != 99 {
		t.Fatalf("second receipt %+v", r)
	}
}

var (
	_ = bytes.NewReader
	_ = slog.Default
)
