package node

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/spade"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape GETs /metrics over HTTP and parses it as Prometheus does.
func scrape(t *testing.T, n *Node) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + n.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value is the value of the series of family name whose labels include
// want (name=value pairs); ok is false when there is none.
func value(fams map[string]*dto.MetricFamily, name string, want ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		if hasLabels(m, want) {
			switch {
			case m.Gauge != nil:
				return m.Gauge.GetValue(), true
			case m.Counter != nil:
				return m.Counter.GetValue(), true
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func hasLabels(m *dto.Metric, want []string) bool {
	for i := 0; i+1 < len(want); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == want[i] && l.GetValue() == want[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// sum adds the values of every series of a family whose labels include
// want.
func sum(fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	var total float64
	if f := fams[name]; f != nil {
		for _, m := range f.GetMetric() {
			if hasLabels(m, want) {
				total += m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return total
}

// metricsSetup is ferry with the deal engine simulator and CARs in every
// state a CAR can wait in: with a piece, without one (the piece workers
// compute it), one whose piece can never be computed (its URL answers
// nothing: it stays QUEUED) and one refused (REJECTED).
type metricsSetup struct {
	*dealSetup
	published []string  // every car.replicated's CAR
	start     time.Time // before the first publish
	stuck     string    // the CAR that stays QUEUED
	stuckAt   time.Time // before it was published
}

func startMetrics(t *testing.T, delay time.Duration) *metricsSetup {
	t.Helper()
	// Six small CARs fit one aggregate of the test deal size: it stays
	// INGESTING until the test closes it.
	// The stuck CAR's URL answers nothing until the test ends: its piece
	// worker waits, and the CAR stays QUEUED.
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	t.Cleanup(hang.Close)
	nt := testutil.StartNATS(t)
	d := startDealsOn(t, nt.URL(), 6, spade.SimConfig{Delay: delay}, "", func(c *Config) { c.Pieces.Fetch.Policy = loopback })
	d.nt, d.js = nt, nt.JS
	s := &metricsSetup{dealSetup: d, start: time.Now()}
	pub := jetlog.NewPublisher(d.js, jetlog.DefaultSubjects)
	publish := func(ev *events.CarReplicated) {
		if _, err := pub.Publish(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
		s.published = append(s.published, ev.Car)
	}
	for i, c := range d.cars {
		publish(c.Event("http://"+d.n.HTTPAddr()+"/cars", i < 4))
	}
	stuck := testutil.MakeCAR(t, 77, 3000)
	s.stuck, s.stuckAt = stuck.CID.String(), time.Now()
	publish(stuck.Event(hang.URL, false))
	bad := testutil.MakeCAR(t, 78, 3000).Event("http://127.0.0.1:1/nowhere", true)
	bad.MD5 = "not-an-md5"
	publish(bad)
	return s
}

// carStates is every published CAR's state as GET /v1/cars/{cid} gives
// it.
func (s *metricsSetup) carStates(t *testing.T) map[string]int {
	t.Helper()
	got := map[string]int{}
	for _, car := range s.published {
		v, err := s.api.Car(context.Background(), car)
		if err != nil {
			got["missing"]++
			continue
		}
		got[v.State]++
	}
	return got
}

// aggStates is the aggregates by state as GET /v1/aggregates gives them,
// and the offers the engine accepted.
func (s *metricsSetup) aggStates(t *testing.T) (map[string]int, int) {
	t.Helper()
	page, err := s.api.Aggregates(context.Background(), "", 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	got, offers := map[string]int{}, 0
	for _, a := range page.Aggregates {
		got[a.State]++
		offers += a.Offers
	}
	return got, offers
}

// waitSaying is testutil.Eventually that says, on a timeout, what the last
// try found.
func waitSaying(t *testing.T, what string, cond func(last *string) bool) {
	t.Helper()
	var last string
	deadline := time.Now().Add(30 * time.Second)
	for !cond(&last) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %s", what, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// agree waits until the state gauges say what the API says, each read
// within one round.
func (s *metricsSetup) agree(t *testing.T, what string, cond func(cars, aggs map[string]int) bool) {
	t.Helper()
	waitSaying(t, what, func(last *string) bool {
		cars := s.carStates(t)
		aggs, _ := s.aggStates(t)
		fams := scrape(t, s.n)
		if !cond(cars, aggs) {
			v, _ := s.api.Car(context.Background(), s.stuck)
			*last = fmt.Sprintf("the API says cars %v aggregates %v; the stuck CAR %+v", cars, aggs, v)
			return false
		}
		for _, st := range carStates {
			if got, _ := value(fams, "ferry_cars", "state", st); got != float64(cars[st]) {
				*last = fmt.Sprintf("ferry_cars{state=%q} %v, the API %d (%v)", st, got, cars[st], cars)
				return false
			}
		}
		for _, st := range aggStates {
			if got, _ := value(fams, "ferry_aggregates", "state", st); got != float64(aggs[st]) {
				*last = fmt.Sprintf("ferry_aggregates{state=%q} %v, the API %d (%v)", st, got, aggs[st], aggs)
				return false
			}
		}
		return cars["missing"] == 0
	})
}

func TestStateMetricsAgreeWithTheAPI(t *testing.T) {
	s := startMetrics(t, 3*time.Second)
	s.agree(t, "a CAR QUEUED, one REJECTED, the rest AGGREGATING", func(cars, _ map[string]int) bool {
		return cars[aggregator.Queued] == 1 && cars[aggregator.Rejected] == 1 && cars[aggregator.Aggregating] == len(s.cars)
	})
	fams := scrape(t, s.n)
	// The stuck CAR was accepted after stuckAt; the INGESTING aggregate
	// took its first CAR after start.
	if age, _ := value(fams, "ferry_oldest_queued_car_age_seconds"); age <= 0 || age > time.Since(s.stuckAt).Seconds() {
		t.Errorf("oldest queued age %v s, the CAR was published %v ago", age, time.Since(s.stuckAt))
	}
	if age, _ := value(fams, "ferry_oldest_ingesting_car_age_seconds"); age <= 0 || age > time.Since(s.start).Seconds() {
		t.Errorf("oldest ingesting age %v s, the first CAR was published %v ago", age, time.Since(s.start))
	}
	if age, _ := value(fams, "ferry_oldest_deal_pending_aggregate_age_seconds"); age != 0 {
		t.Errorf("oldest DEAL_PENDING age %v s with none DEAL_PENDING", age)
	}

	closed := time.Now()
	closeIngesting(t, s.n, s.api)
	s.agree(t, "the aggregate DEAL_PENDING", func(_, aggs map[string]int) bool { return aggs[aggregator.DealPending] == 1 })
	fams = scrape(t, s.n)
	if age, _ := value(fams, "ferry_oldest_deal_pending_aggregate_age_seconds"); age <= 0 || age > time.Since(closed).Seconds() {
		t.Errorf("oldest DEAL_PENDING age %v s, closed %v ago", age, time.Since(closed))
	}
	if age, _ := value(fams, "ferry_oldest_ingesting_car_age_seconds"); age != 0 {
		t.Errorf("oldest ingesting age %v s with none INGESTING", age)
	}

	s.agree(t, "the aggregate DEAL_PROCESSED", func(cars, aggs map[string]int) bool {
		return aggs[aggregator.DealProcessed] == 1 && cars[aggregator.DealProcessed] == len(s.cars)
	})
	_, offers := s.aggStates(t)
	fams = scrape(t, s.n)
	if got, _ := value(fams, "ferry_deal_offers_total", "outcome", spade.OutcomeAccepted); got != float64(offers) || offers == 0 {
		t.Errorf("ferry_deal_offers_total{outcome=accepted} %v, the API's aggregates were offered %d times", got, offers)
	}
	if got, _ := value(fams, "ferry_deal_engine_round_trip_seconds", "outcome", spade.OutcomeAccepted); got != float64(len(s.sim.Offers())) {
		t.Errorf("%v engine round trips timed, the engine saw %d offers", got, len(s.sim.Offers()))
	}
}

// TestInputAndStreamMetricsAgreeWithTheLog checks the inputs by type
// against the input log's messages per subject, and the stream and queue
// figures against JetStream's stream info, both read by the test's own
// connection.
func TestInputAndStreamMetricsAgreeWithTheLog(t *testing.T) {
	s := startMetrics(t, 10*time.Millisecond)
	s.agree(t, "every CAR but the stuck one on its way", func(cars, _ map[string]int) bool {
		return cars[aggregator.Aggregating] == len(s.cars)
	})
	ctx := context.Background()
	perSubject := func() map[string]uint64 {
		st, err := s.js.Stream(ctx, jetlog.StreamIn)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(">"))
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Subjects
	}
	waitSaying(t, "inputs by type to match the input log", func(last *string) bool {
		fams, subjects := scrape(t, s.n), perSubject()
		for _, typ := range []string{events.TypeCarReplicated, "car.piece"} {
			if got, want := sum(fams, "ferry_inputs_total", "type", typ), subjects[jetlog.DefaultSubjects.Input(typ)]; got != float64(want) || want == 0 {
				*last = fmt.Sprintf("ferry_inputs_total{type=%q} %v, the input log holds %d", typ, got, want)
				return false
			}
		}
		return true
	})
	fams := scrape(t, s.n)
	if got, want := sum(fams, "ferry_inputs_total", "outcome", inputRejected), s.carStates(t)[aggregator.Rejected]; got != float64(want) {
		t.Errorf("ferry_inputs_total{outcome=rejected} %v, the API has %d CARs REJECTED", got, want)
	}

	waitSaying(t, "stream and queue figures to match JetStream's", func(last *string) bool {
		fams := scrape(t, s.n)
		for _, name := range Streams {
			st, err := s.js.Stream(ctx, name)
			if err != nil {
				*last = fmt.Sprintf("stream %s: %v", name, err)
				continue // not made on this server
			}
			state := st.CachedInfo().State
			msgs, _ := value(fams, "ferry_stream_messages", "stream", name)
			size, _ := value(fams, "ferry_stream_bytes", "stream", name)
			if msgs != float64(state.Msgs) || size != float64(state.Bytes) {
				*last = fmt.Sprintf("stream %s: %v messages %v bytes, JetStream says %d and %d", name, msgs, size, state.Msgs, state.Bytes)
				return false
			}
		}
		for _, q := range Queues {
			for name, family := range map[string]string{q.Stream: "ferry_work_queue_depth", q.DeadStream: "ferry_work_queue_dead_letters"} {
				var want uint64
				if st, err := s.js.Stream(ctx, name); err == nil {
					want = st.CachedInfo().State.Msgs
				}
				if got, ok := value(fams, family, "queue", q.Label); !ok || got != float64(want) {
					*last = fmt.Sprintf("%s{queue=%q} %v, stream %s holds %d", family, q.Label, got, name, want)
					return false
				}
			}
		}
		waiting, ok := value(fams, "ferry_aggregator_inputs_waiting")
		*last = fmt.Sprintf("%v inputs waiting (%v)", waiting, ok)
		return ok && waiting == 0
	})
	if age, ok := value(fams, "ferry_aggregator_last_input_age_seconds"); !ok || age < 0 || age > time.Since(s.start).Seconds() {
		t.Errorf("last input age %v (%v), the first input was published %v ago", age, ok, time.Since(s.start))
	}
}

// TestHTTPMetricsCountRequestsByRoute makes requests of known routes and
// statuses and reads them back by route pattern, never by path.
func TestHTTPMetricsCountRequestsByRoute(t *testing.T) {
	s := startMetrics(t, 10*time.Millisecond)
	const route = "GET /v1/cars/{cid}"
	// The CARs are known once the read models applied them; the requests
	// that wait for that are counted before the scrape the test starts from.
	waitFor(t, "the read models to know the first three CARs", func() bool {
		for _, car := range s.published[:3] {
			if _, err := s.api.Car(context.Background(), car); err != nil {
				return false
			}
		}
		return true
	})
	before := scrape(t, s.n)
	get := func(path string) {
		resp, err := http.Get("http://" + s.n.HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	for _, car := range s.published[:3] {
		get("/v1/cars/" + car)
	}
	unknown := testutil.MakeCAR(t, 99, 100).CID.String()
	get("/v1/cars/" + unknown)
	get("/no/such/route")
	after := scrape(t, s.n)
	delta := func(name string, labels ...string) float64 {
		a, _ := value(after, name, labels...)
		b, _ := value(before, name, labels...)
		return a - b
	}
	if got := delta("ferry_http_requests_total", "route", route, "code", "200"); got != 3 {
		t.Errorf("%s 200: %v requests counted, made 3", route, got)
	}
	if got := delta("ferry_http_requests_total", "route", route, "code", "404"); got != 1 {
		t.Errorf("%s 404: %v requests counted, made 1", route, got)
	}
	if got := delta("ferry_http_request_duration_seconds", "route", route, "code", "200"); got != 3 {
		t.Errorf("%s 200: %v requests timed, made 3", route, got)
	}
	if got := delta("ferry_http_requests_total", "route", "unmatched", "code", "404"); got != 1 {
		t.Errorf("unmatched 404: %v requests counted, made 1", got)
	}
	for _, m := range after["ferry_http_requests_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "route" && (strings.Contains(l.GetValue(), unknown) || strings.Contains(l.GetValue(), s.published[0])) {
				t.Errorf("a route label holds a raw path: %q", l.GetValue())
			}
		}
	}
}
