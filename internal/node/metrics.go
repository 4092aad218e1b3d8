package node

import (
	"time"

	"github.com/ferry-dev/ferry/events"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

type metrics struct {
	decisions *prometheus.CounterVec
	closes    *prometheus.CounterVec
	applyTime prometheus.Histogram
}

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
	}
	reg.MustRegister(m.decisions, m.closes, m.applyTime,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
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
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "ferry_ingesting_cars", Help: "CARs in the INGESTING aggregate."},
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
