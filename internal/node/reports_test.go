package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/client"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/wire"
)

// reportNode is a node that takes reports, with a READY aggregate.
func reportNode(t *testing.T) (*Node, *testutil.NATS, *wire.AggregateView) {
	t.Helper()
	nt := testutil.StartNATS(t)
	cfg := testConfig(t.TempDir(), nt.URL())
	cfg.ReportToken = reportToken
	n := startNode(t, cfg)
	return n, nt, readyAggregate(t, n, nt, "", 2)
}

// TestAReportAddingOneDealToALongListIsNotTakenForARetry: a report of 40
// deals, then the same 40 and one more inside the duplicate window. Both
// are stored and the fold records the 41st deal.
func TestAReportAddingOneDealToALongListIsNotTakenForARetry(t *testing.T) {
	n, _, agg := reportNode(t)

	var deals []events.Deal
	for i := range 41 {
		deals = append(deals, events.Deal{Provider: fmt.Sprintf("f0%d", 100000+i), DealID: uint64(7000000 + i)})
	}
	report := func(deals []events.Deal) string {
		b, _ := json.Marshal(events.DealReport{Aggregate: agg.Piece, Status: events.StatusPublished, Deals: deals})
		return string(b)
	}
	for _, count := range []int{40, 41} {
		status, body := post(t, n, "/v1/deals/report", reportToken, report(deals[:count]))
		var ans struct {
			Status    string `json:"status"`
			Duplicate bool   `json:"duplicate"`
		}
		_ = json.Unmarshal([]byte(body), &ans)
		if status != http.StatusAccepted || ans.Duplicate {
			t.Fatalf("report of %d deals: %d %s, want 202 and not a duplicate", count, status, body)
		}
	}
	api := client.NewHTTP(n.HTTPAddr())
	testutil.Eventually(t, 20*time.Second, "the aggregate to have 41 deals", func() bool {
		a, _ := api.Aggregate(context.Background(), fmt.Sprint(agg.ID), -1, 0)
		return a != nil && len(a.Deals) == 41
	})
	a, _ := api.Aggregate(context.Background(), fmt.Sprint(agg.ID), -1, 0)
	if last := a.Deals[40]; last.Provider != deals[40].Provider || last.DealID != deals[40].DealID {
		t.Fatalf("the 41st deal is %+v, want %+v", last, deals[40])
	}
}

// TestADealReportForAFailedAggregateIsAnsweredWithWhatTheFoldDoes: deals
// reported for a DEAL_FAILED aggregate change nothing; the engine is told
// so with 409 and the reason, and the report is on record in the input
// log, where the fold ignores it with the same reason.
func TestADealReportForAFailedAggregateIsAnsweredWithWhatTheFoldDoes(t *testing.T) {
	n, nt, agg := reportNode(t)
	failed := fmt.Sprintf(`{"aggregate":"%s","status":"failed","reason":"no provider took it"}`, agg.Piece)
	if status, body := post(t, n, "/v1/deals/report", reportToken, failed); status != http.StatusAccepted {
		t.Fatalf("failure report: %d %s", status, body)
	}
	api := client.NewHTTP(n.HTTPAddr())
	testutil.Eventually(t, 20*time.Second, "the aggregate to be DEAL_FAILED", func() bool {
		a, _ := api.Aggregate(context.Background(), fmt.Sprint(agg.ID), -1, 0)
		return a != nil && a.State == aggregator.DealFailed
	})

	published := fmt.Sprintf(`{"aggregate":"%s","status":"published","deals":[{"provider":"f01000","dealId":5}]}`, agg.Piece)
	status, body := post(t, n, "/v1/deals/report", reportToken, published)
	var ans struct {
		Status, Reason string
		Seq            uint64
	}
	if err := json.Unmarshal([]byte(body), &ans); err != nil {
		t.Fatalf("answer %q: %v", body, err)
	}
	want := fmt.Sprintf("aggregate %d is DEAL_FAILED", agg.ID)
	if status != http.StatusConflict || ans.Status != "rejected" || !strings.Contains(ans.Reason, want) || ans.Seq == 0 {
		t.Fatalf("deals for a failed aggregate: %d %s, want 409 rejected mentioning %q with the input's seq", status, body, want)
	}
	waitIdle(t, n, nt.JS)
	var ignored string
	err := client.Replay(context.Background(), nt.JS, 0, func(_ uint64, b events.Batch) error {
		if b.In == ans.Seq {
			for _, d := range b.Decisions {
				ignored = d.Type + ": " + d.Reason
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if ignored != events.DecInputIgnored+": deal.report: "+want {
		t.Fatalf("the fold decided %q on input %d, want it ignored: %s", ignored, ans.Seq, want)
	}
	a, _ := api.Aggregate(context.Background(), fmt.Sprint(agg.ID), -1, 0)
	if a.State != aggregator.DealFailed || len(a.Deals) != 0 {
		t.Fatalf("aggregate after the rejected report: %s with %d deals", a.State, len(a.Deals))
	}
}
