package node

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/spade"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Every series ferry exports is listed, with its meaning, in
// docs/operations.md ("Metrics"); docs/alerts.yml alerts on them, and
// TestAlertsUseOnlyExportedMetrics holds the two together.
type metrics struct {
	decisions *prometheus.CounterVec
	closes    *prometheus.CounterVec
	applyTime prometheus.Histogram
	inputs    *prometheus.CounterVec
	offers    *prometheus.CounterVec
	engineRTT *prometheus.HistogramVec
	httpReqs  *prometheus.CounterVec
	httpTime  *prometheus.HistogramVec
	// lastInput is when the input log stored the last input this process
	// applied as leader (UnixNano; 0 before the first).
	lastInput atomic.Int64
}

// The states the per-state gauges always report, 0 included, so that
// every series an alert names exists from the start.
var (
	carStates = []string{aggregator.Queued, aggregator.Aggregating, aggregator.Ready, aggregator.DealPending,
		aggregator.DealProcessed, aggregator.DealFailed, aggregator.Rejected}
	aggStates = []string{aggregator.Ingesting, aggregator.Ready, aggregator.DealPending,
		aggregator.DealProcessed, aggregator.DealFailed, aggregator.Released}
	offerOutcomes = []string{spade.OutcomeAccepted, spade.OutcomeRefused, spade.OutcomeBadOffer, spade.OutcomeFailed}
)

func newMetrics(reg *prometheus.Registry, n *Node) *metrics {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_decisions_total", Help: "Decisions appended to the aggregate log, by type.",
		}, []string{"type"}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_aggregates_closed_total", Help: "Aggregates closed, by reason.",
		}, []string{"reason"}),
		applyTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ferry_apply_seconds", Help: "Time the fold took for one input that caused decisions.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 12),
		}),
		inputs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_inputs_total", Help: "Inputs this process applied as the aggregator's leader, by type and outcome.",
		}, []string{"type", "outcome"}),
		offers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_deal_offers_total", Help: "Offers made to the deal engine, by outcome (after the offerer's retries).",
		}, []string{"outcome"}),
		engineRTT: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ferry_deal_engine_round_trip_seconds", Help: "Time one offer request to the deal engine took, by outcome.",
			Buckets: prometheus.ExponentialBuckets(0.005, 3, 10),
		}, []string{"outcome"}),
		httpReqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_http_requests_total", Help: "HTTP requests answered, by route pattern and status code.",
		}, []string{"route", "code"}),
		httpTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ferry_http_request_duration_seconds", Help: "Time to answer an HTTP request, by route pattern and status code.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"route", "code"}),
	}
	for _, o := range offerOutcomes {
		m.offers.WithLabelValues(o)
		m.engineRTT.WithLabelValues(o)
	}
	reg.MustRegister(m.decisions, m.closes, m.applyTime, m.inputs, m.offers, m.engineRTT, m.httpReqs, m.httpTime,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&stateCollector{n: n, m: m},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ferry_projection_seq", Help: "Aggregate log sequence the read models applied."},
			func() float64 { return float64(n.Projector.Seq()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ferry_projection_lag_messages",
			Help: "Aggregate log messages the read models are behind its last sequence, as the stream's leader holds it."},
			func() float64 { msgs, _ := n.lag.lag(); return float64(msgs) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ferry_projection_lag_seconds",
			Help: "How long the read models have been behind a last sequence of the aggregate log they have not applied yet."},
			func() float64 { _, age := n.lag.lag(); return age.Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ferry_aggregate_log_seq", Help: "Aggregate log sequence the aggregator appended."},
			func() float64 { return float64(n.Runner.Status().AggSeq) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ferry_aggregator_leader", Help: "1 while this process leads the aggregator."},
			func() float64 {
				if n.Runner.Status().Leader {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ferry_cars_queued", Help: "CARs waiting for their piece."},
			func() float64 { return float64(n.Runner.Status().Counts.Queued) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ferry_ingesting_cars", Help: "CARs in the INGESTING aggregates (the shared pool's and the groups')."},
			func() float64 { return float64(n.Runner.Status().Counts.IngestingCount) }),
	)
	return m
}

func (m *metrics) observeBatch(b events.Batch, took time.Duration) {
	m.applyTime.Observe(took.Seconds())
	for _, d := range b.Decisions {
		m.decisions.WithLabelValues(d.Type).Inc()
		if d.Type == events.DecAggReady {
			m.closes.WithLabelValues(d.Closed).Inc()
		}
	}
}

// The outcomes of an input (ferry_inputs_total).
const (
	inputApplied   = "applied"   // it caused decisions that changed the state
	inputRejected  = "rejected"  // it was refused on the record (car.rejected)
	inputIgnored   = "ignored"   // it changed nothing, with a reason (input.ignored)
	inputUnchanged = "unchanged" // it caused no decision at all (a quiet tick, a repeat)
)

func (m *metrics) observeInput(typ string, stored time.Time, b events.Batch) {
	m.lastInput.Store(stored.UnixNano())
	m.inputs.WithLabelValues(typ, inputOutcome(typ, b)).Inc()
}

func inputOutcome(typ string, b events.Batch) string {
	out := inputUnchanged
	for _, d := range b.Decisions {
		switch {
		case d.Type == events.DecCarRejected:
			return inputRejected
		case d.Type == events.DecInputIgnored:
			out = inputIgnored
		case d.Type == events.DecLogSettings && typ != events.TypeSettingsChange:
			// The settings the first batch records, whatever its input.
		default:
			if out == inputUnchanged {
				out = inputApplied
			}
		}
	}
	return out
}

func (m *metrics) observeOffer(outcome string) { m.offers.WithLabelValues(outcome).Inc() }

func (m *metrics) observeEngine(outcome string, took time.Duration) {
	m.engineRTT.WithLabelValues(outcome).Observe(took.Seconds())
}

// instrument counts and times the requests h answers by the pattern the
// mux routed them with (never the raw path: a CID per series would be
// unbounded). The mux sets the pattern on the request it is handed, so
// the request passed on is kept to read it back after.
func (m *metrics) instrument(h http.Handler) http.Handler {
	type key struct{}
	route := promhttp.WithLabelFromCtx("route", func(ctx context.Context) string {
		r, _ := ctx.Value(key{}).(*atomic.Pointer[http.Request])
		if r == nil || r.Load() == nil || r.Load().Pattern == "" {
			return "unmatched"
		}
		return r.Load().Pattern
	})
	inner := promhttp.InstrumentHandlerCounter(m.httpReqs, promhttp.InstrumentHandlerDuration(m.httpTime, h, route), route)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var box atomic.Pointer[http.Request]
		r = r.WithContext(context.WithValue(r.Context(), key{}, &box))
		box.Store(r)
		inner.ServeHTTP(w, r)
	})
}

// stateCollector reads the read models' counts and ages, the streams and
// the aggregator at each scrape; none of it scans records, and the
// streams come from a cache a slow NATS cannot hold up (queues.go).
type stateCollector struct {
	n *Node
	m *metrics
}

var (
	descCars = prometheus.NewDesc("ferry_cars", "CARs by the state the status API reports for them, from the read models.",
		[]string{"state"}, nil)
	descAggs = prometheus.NewDesc("ferry_aggregates", "Aggregates by state, from the read models.",
		[]string{"state"}, nil)
	descOldestQueued = prometheus.NewDesc("ferry_oldest_queued_car_age_seconds",
		"Time since the oldest QUEUED CAR was accepted (0 when none waits).", nil, nil)
	descOldestIngesting = prometheus.NewDesc("ferry_oldest_ingesting_car_age_seconds",
		"Time since the oldest INGESTING aggregate (the pool's or a group's) took its first CAR (0 when there is none).", nil, nil)
	descOldestPending = prometheus.NewDesc("ferry_oldest_deal_pending_aggregate_age_seconds",
		"Time since the aggregate DEAL_PENDING longest was offered (0 when none is).", nil, nil)
	descStreamMsgs = prometheus.NewDesc("ferry_stream_messages", "Messages a stream holds.",
		[]string{"stream"}, nil)
	descStreamBytes = prometheus.NewDesc("ferry_stream_bytes", "Bytes a stream holds.",
		[]string{"stream"}, nil)
	descStreamsAge = prometheus.NewDesc("ferry_stream_stats_age_seconds",
		"Age of the stream figures this scrape reports (they are cached; a NATS that does not answer makes it grow).", nil, nil)
	descQueueDepth = prometheus.NewDesc("ferry_work_queue_depth",
		"Items waiting or being worked in a work queue (its work stream's messages).", []string{"queue"}, nil)
	descQueueDead = prometheus.NewDesc("ferry_work_queue_dead_letters",
		"Items a work queue gave up on (its dead-letter stream's messages).", []string{"queue"}, nil)
	descInputsWaiting = prometheus.NewDesc("ferry_aggregator_inputs_waiting",
		"Inputs in the input log after the last one this process's aggregator applied.", nil, nil)
	descLastInputAge = prometheus.NewDesc("ferry_aggregator_last_input_age_seconds",
		"Time since the input log stored the last input this process applied as leader (absent before the first).", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCars, descAggs, descOldestQueued, descOldestIngesting, descOldestPending,
		descStreamMsgs, descStreamBytes, descStreamsAge, descQueueDepth, descQueueDead, descInputsWaiting, descLastInputAge} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	now := time.Now()
	stats := c.n.Store.Stats()
	for _, s := range carStates {
		gauge(descCars, float64(stats.Cars[s]), s)
	}
	for _, s := range aggStates {
		gauge(descAggs, float64(stats.Aggregates[s]), s)
	}
	if ages, err := c.n.Store.Ages(); err == nil {
		gauge(descOldestQueued, age(now, ages.Queued))
		gauge(descOldestIngesting, age(now, ages.Ingesting))
		gauge(descOldestPending, age(now, ages.DealPending))
	}
	streams, at := c.n.Streams()
	byName := map[string]StreamStat{}
	for _, s := range streams {
		byName[s.Name] = s
		if s.Err == "" {
			gauge(descStreamMsgs, float64(s.Messages), s.Name)
			gauge(descStreamBytes, float64(s.Bytes), s.Name)
		}
	}
	if !at.IsZero() {
		gauge(descStreamsAge, now.Sub(at).Seconds())
	}
	// A queue whose streams do not exist yet holds nothing; one whose
	// streams could not be read is left out rather than shown empty.
	for _, q := range Queues {
		if work, dead := byName[q.Stream], byName[q.DeadStream]; work.Err == "" && dead.Err == "" {
			gauge(descQueueDepth, float64(work.Messages), q.Label)
			gauge(descQueueDead, float64(dead.Messages), q.Label)
		}
	}
	if in, ok := byName[jetlog.StreamIn]; ok && in.Err == "" {
		gauge(descInputsWaiting, float64(in.LastSeq-min(in.LastSeq, c.n.Runner.Status().LastIn)))
	}
	if last := c.m.lastInput.Load(); last != 0 {
		gauge(descLastInputAge, now.Sub(time.Unix(0, last)).Seconds())
	}
}

// age is the seconds from since to now; 0 for a zero since (nothing
// waits).
func age(now, since time.Time) float64 {
	if since.IsZero() {
		return 0
	}
	return max(0, now.Sub(since).Seconds())
}
