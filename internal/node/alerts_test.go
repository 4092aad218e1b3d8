package node

import (
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/spade"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// alertMetrics parses docs/alerts.yml with Prometheus's own rule parser
// (which also checks each expression and template) and returns, by alert,
// the metric names its expression selects.
func alertMetrics(t *testing.T) map[string][]string {
	t.Helper()
	p := parser.NewParser(parser.Options{})
	groups, errs := rulefmt.ParseFile("../../docs/alerts.yml", false, model.UTF8Validation, p, slog.Default())
	if len(errs) > 0 {
		t.Fatalf("docs/alerts.yml: %v", errs)
	}
	out := map[string][]string{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			expr, err := p.ParseExpr(r.Expr)
			if err != nil {
				t.Fatalf("alert %s: %v", r.Alert, err)
			}
			parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
				if vs, ok := node.(*parser.VectorSelector); ok {
					out[r.Alert] = append(out[r.Alert], selectorName(t, r.Alert, vs))
				}
				return nil
			})
		}
	}
	return out
}

// selectorName is the metric a vector selector names; a selector by a
// name pattern could match nothing and is refused.
func selectorName(t *testing.T, alert string, vs *parser.VectorSelector) string {
	t.Helper()
	if vs.Name != "" {
		return vs.Name
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
			return m.Value
		}
	}
	t.Fatalf("alert %s selects %s: name its metric", alert, vs)
	return ""
}

// TestAlertsUseOnlyExportedMetrics checks every metric docs/alerts.yml
// alerts on against what a running ferry, with a deal engine and CARs
// published, serves at GET /metrics.
func TestAlertsUseOnlyExportedMetrics(t *testing.T) {
	byAlert := alertMetrics(t)
	for _, want := range []string{"FerryAggregateDealPendingTooLong", "FerryPieceWaitingLong", "FerryPieceWaitingTooLong",
		"FerryDealEngineDown", "FerryDealEngineNoRoundTrip", "FerryDeadLettersGrowing", "FerryAggregatorStalled", "FerryAggregatorNoLeader"} {
		if len(byAlert[want]) == 0 {
			t.Errorf("docs/alerts.yml has no alert %s", want)
		}
	}
	s := startMetrics(t, 10*time.Millisecond)
	s.agree(t, "the CARs AGGREGATING", func(cars, _ map[string]int) bool { return cars[aggregator.Aggregating] == len(s.cars) })
	closeIngesting(t, s.n, s.api)
	waitOffered(t, s)
	fams := scrape(t, s.n)
	for alert, names := range byAlert {
		for _, name := range names {
			if family := familyOf(name, fams); family == "" {
				t.Errorf("alert %s uses %s, which ferry does not export", alert, name)
			}
		}
	}
}

// waitOffered waits for the engine's first answer, so that a scrape
// has every series.
func waitOffered(t *testing.T, s *metricsSetup) {
	t.Helper()
	waitSaying(t, "an offer's outcome", func(last *string) bool {
		got, _ := value(scrape(t, s.n), "ferry_deal_offers_total", "outcome", spade.OutcomeAccepted)
		return got > 0
	})
}

// familyOf is the exported family a series name belongs to: the name
// itself, or a histogram's or summary's _bucket, _sum or _count.
func familyOf(name string, fams map[string]*dto.MetricFamily) string {
	if f, ok := fams[name]; ok && len(f.GetMetric()) > 0 {
		return name
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if f := fams[base]; ok && f != nil && slices.Contains([]dto.MetricType{dto.MetricType_HISTOGRAM, dto.MetricType_SUMMARY}, f.GetType()) {
			return base
		}
	}
	return ""
}
