package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/events"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/client"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/spade"
	"github.com/ferry-dev/ferry/wire"
)

// simServer is a deal engine simulator that can be stopped and started
// again at the same address, as the README's walk-through restarts
// `ferry spade-sim`. A stop loses what the simulator was doing.
type simServer struct {
	t    *testing.T
	addr string
	sim  *spade.Simulator
	srv  *http.Server
}

func startSim(t *testing.T, addr string, cfg spade.SimConfig) *simServer {
	t.Helper()
	cfg.ReportBackoff = spade.Backoff{First: 10 * time.Millisecond, Max: 100 * time.Millisecond}
	sim, err := spade.NewSimulator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &simServer{t: t, addr: ln.Addr().String(), sim: sim, srv: &http.Server{Handler: sim.Handler()}}
	go func() { _ = s.srv.Serve(ln) }()
	t.Cleanup(s.stop)
	return s
}

func (s *simServer) stop() {
	_ = s.srv.Close()
	_ = s.sim.Close()
}

// restart stops the simulator and starts a fresh one with cfg.
func (s *simServer) restart(cfg spade.SimConfig) *simServer {
	s.stop()
	return startSim(s.t, s.addr, cfg)
}

// dealClockNode is ferry with a short deal clock in tick time: ticks every
// 20 ms, aggregates close 300 ms after they open (the walk-through's
// --max-wait), deals time out after 2 s, failed CARs wait 200 ms, 400 ms…
func dealClockNode(t *testing.T, engine string) (*Node, *testutil.NATS, string) {
	return dealClockNodeWith(t, engine, func(*events.Settings) {})
}

func dealClockNodeWith(t *testing.T, engine string, fold func(*events.Settings)) (*Node, *testutil.NATS, string) {
	nt := testutil.StartNATS(t)
	dir := t.TempDir()
	cfg := testConfig(t.TempDir(), nt.URL())
	cfg.Tick = 20 * time.Millisecond
	cfg.Fold.MinPayload, cfg.Fold.MaxWait = 1, 300*time.Millisecond
	cfg.Fold.DealTimeout, cfg.Fold.MaxOffers, cfg.Fold.OfferBackoff = 2*time.Second, 8, 200*time.Millisecond
	fold(&cfg.Fold)
	cfg.CarStore, cfg.ReportToken = dir, reportToken
	cfg.Deals = DealConfig{Engine: engine, RetryAfter: 50 * time.Millisecond}
	return startNode(t, cfg), nt, dir
}

func makeCars(t *testing.T, dir string, first, n int) []testutil.CAR {
	var cars []testutil.CAR
	for i := first; i < first+n; i++ {
		c := testutil.MakeCAR(t, uint64(5000+i), 2000+i*7717%50000)
		c.WriteTo(t, dir)
		cars = append(cars, c)
	}
	return cars
}

func publishCars(t *testing.T, n *Node, nt *testutil.NATS, cars []testutil.CAR) {
	pub := jetlog.NewPublisher(nt.JS, jetlog.DefaultSubjects)
	for _, c := range cars {
		if _, err := pub.Publish(context.Background(), c.Event("http://"+n.HTTPAddr()+"/cars", true)); err != nil {
			t.Fatal(err)
		}
	}
}

func aggsIn(t *testing.T, api *client.HTTP, state string) []wire.AggregateView {
	page, err := api.Aggregates(context.Background(), state, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return page.Aggregates
}

func allIn(api *client.HTTP, cars []testutil.CAR, state string) bool {
	for _, c := range cars {
		if v, err := api.Car(context.Background(), c.CID.String()); err != nil || v.State != state {
			return false
		}
	}
	return true
}

// TestTheFailedDealWalkThroughEndsWithEveryCarProcessed follows the
// README: deals with a working simulator, then a restart with
// --failure-rate 1 and more CARs, then a restart with --failure-rate 0
// while an offer is still with the failing one. Before the deal clock the
// offer lost in that restart left its aggregate DEAL_PENDING for good,
// and a failing engine was offered something again at once, every time.
func TestTheFailedDealWalkThroughEndsWithEveryCarProcessed(t *testing.T) {
	sim := startSim(t, "127.0.0.1:0", spade.SimConfig{ReportToken: reportToken, Delay: 10 * time.Millisecond})
	n, nt, dir := dealClockNode(t, "http://"+sim.addr+"/offers")
	api := client.NewHTTP(n.HTTPAddr())

	first := makeCars(t, dir, 0, 10)
	publishCars(t, n, nt, first)
	testutil.Eventually(t, 60*time.Second, "the first CARs to get deals", func() bool { return allIn(api, first, aggregator.DealProcessed) })

	// The failing engine reports after a while, so that offers are with it
	// when it is stopped.
	failing := spade.SimConfig{ReportToken: reportToken, Delay: 500 * time.Millisecond, FailureRate: 1}
	sim = sim.restart(failing)
	more := makeCars(t, dir, 10, 10)
	publishCars(t, n, nt, more)
	var pending []wire.AggregateView
	for try := 0; len(pending) == 0; try++ {
		if try == 5 {
			t.Fatal("no offer was ever pending with the failing engine when it stopped")
		}
		testutil.Eventually(t, 60*time.Second, "a failed deal and an offer pending with the failing engine", func() bool {
			return len(aggsIn(t, api, aggregator.DealFailed)) > 0 && len(aggsIn(t, api, aggregator.DealPending)) > 0
		})
		// Stopped, it reports nothing more: what is pending once ferry
		// has taken any report that was under way is lost.
		sim.stop()
		time.Sleep(300 * time.Millisecond)
		if pending = aggsIn(t, api, aggregator.DealPending); len(pending) == 0 {
			sim = startSim(t, sim.addr, failing)
		}
	}
	failed := aggsIn(t, api, aggregator.DealFailed)[0]
	if !strings.Contains(failed.Reason, "simulated failure") || failed.FailedOffers < 1 {
		t.Fatalf("failed aggregate %+v", failed)
	}
	sim = startSim(t, sim.addr, spade.SimConfig{ReportToken: reportToken, Delay: 10 * time.Millisecond})

	all := append(first, more...)
	testutil.Eventually(t, 90*time.Second, "every CAR in DEAL_PROCESSED, with no report written by hand", func() bool {
		return allIn(api, all, aggregator.DealProcessed)
	})
	// The offers the restart lost were made again after the deal timeout.
	for _, p := range pending {
		a, err := api.Aggregate(context.Background(), fmt.Sprint(p.ID), -1, 0)
		if err != nil {
			t.Fatal(err)
		}
		if a.State != aggregator.DealProcessed || a.FailedOffers <= p.FailedOffers {
			t.Fatalf("aggregate %d, pending when the engine stopped (%d unanswered offers), is %s after %d", p.ID, p.FailedOffers, a.State, a.FailedOffers)
		}
	}
	checkLogsUnder(t, nt.JS, n.cfg.Fold)
}

// TestAFailingEngineIsGivenUpOnThenReofferedByTheOperator: with every deal
// failing, each set of CARs is offered at most --max-offers times, then
// stays DEAL_FAILED with the reason until `ferry aggregates reoffer`.
func TestAFailingEngineIsGivenUpOnThenReofferedByTheOperator(t *testing.T) {
	sim := startSim(t, "127.0.0.1:0", spade.SimConfig{ReportToken: reportToken, Delay: 5 * time.Millisecond, FailureRate: 1})
	n, nt, dir := dealClockNodeWith(t, "http://"+sim.addr+"/offers", func(c *events.Settings) {
		// No deal timeout: a slow report would count an offer of the same
		// aggregate, and this test counts aggregates.
		c.MaxWait, c.DealTimeout, c.MaxOffers, c.OfferBackoff = 100*time.Millisecond, 0, 3, 100*time.Millisecond
	})
	api := client.NewHTTP(n.HTTPAddr())
	cars := makeCars(t, dir, 0, 3)
	publishCars(t, n, nt, cars)
	var gaveUp wire.AggregateView
	testutil.Eventually(t, 60*time.Second, "ferry to give up on the CARs", func() bool {
		for _, a := range aggsIn(t, api, aggregator.DealFailed) {
			if strings.HasPrefix(a.Reason, "gave up after 3 offers: simulated failure") {
				gaveUp = a
				return true
			}
		}
		return false
	})
	// The engine may see an offer twice (a repeat is harmless, and the
	// dealer makes one when a new lead races the projection), so ferry's
	// own record counts: three aggregates of the same CARs, one offer
	// each; and the engine sees nothing more over several backoffs.
	engineOffers := func() (n int) {
		for _, o := range sim.sim.Offers() {
			n += o.Offers
		}
		return n
	}
	before := engineOffers()
	time.Sleep(500 * time.Millisecond)
	if after := engineOffers(); after != before {
		t.Fatalf("the engine got %d more offers after ferry gave up", after-before)
	}
	all := aggsIn(t, api, "")
	accepted := 0
	for _, a := range all {
		accepted += a.Offers
	}
	// (A failure reported before ferry recorded the offer leaves that
	// offer unrecorded, hence at most.)
	if len(all) != 3 || accepted > 3 {
		t.Fatalf("ferry made %d aggregates of the CARs with %d accepted offers, want 3 with at most 3 (--max-offers)", len(all), accepted)
	}
	if got := aggsIn(t, api, aggregator.Ready); len(got) != 0 {
		t.Fatalf("READY after giving up: %+v", got)
	}
	if !allIn(api, cars, aggregator.DealFailed) {
		t.Fatal("the given-up CARs should show DEAL_FAILED")
	}
	// The engine is fixed; the operator offers the aggregate again.
	sim = sim.restart(spade.SimConfig{ReportToken: reportToken, Delay: 5 * time.Millisecond})
	if err := api.ReofferAggregate(context.Background(), gaveUp.ID); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, "the CARs to get deals", func() bool { return allIn(api, cars, aggregator.DealProcessed) })
	var he *client.APIError
	if err := api.FailAggregate(context.Background(), gaveUp.ID, "too late"); !errors.As(err, &he) || he.Status != http.StatusConflict {
		t.Fatalf("fail of a DEAL_PROCESSED aggregate: %v, want 409", err)
	}
	checkLogsUnder(t, nt.JS, n.cfg.Fold)
}

// TestAReportRefusedForItsTokenShowsOnTheAggregate: an engine with the
// wrong report token cannot deliver; the aggregate says so.
func TestAReportRefusedForItsTokenShowsOnTheAggregate(t *testing.T) {
	sim := startSim(t, "127.0.0.1:0", spade.SimConfig{ReportToken: "not-" + reportToken, Delay: 5 * time.Millisecond})
	n, nt, dir := dealClockNode(t, "http://"+sim.addr+"/offers")
	api := client.NewHTTP(n.HTTPAddr())
	publishCars(t, n, nt, makeCars(t, dir, 0, 2))
	testutil.Eventually(t, 60*time.Second, "a refused report on the pending aggregate", func() bool {
		for _, p := range aggsIn(t, api, aggregator.DealPending) {
			a, err := api.Aggregate(context.Background(), fmt.Sprint(p.ID), -1, 0)
			if err == nil && a.ReportRefused != nil {
				if !strings.Contains(a.ReportRefused.Error, "401") || a.ReportRefused.Status != "published" {
					t.Fatalf("reportRefused = %+v", a.ReportRefused)
				}
				return true
			}
		}
		return false
	})
}
