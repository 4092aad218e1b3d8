package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/client"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
)

// TestAReportAddingOneDealToALongListIsNotTakenForARetry: a report of 40
// deals, then the same 40 and one more inside the duplicate window. Both
// are stored and the fold records the 41st deal.
func TestAReportAddingOneDealToALongListIsNotTakenForARetry(t *testing.T) {
	nt := testutil.StartNATS(t)
	cfg := testConfig(t.TempDir(), nt.URL())
	cfg.ReportToken = reportToken
	n := startNode(t, cfg)
	agg := readyAggregate(t, n, nt, "", 2)

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
