package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/projections"
)

// Issue 19's cluster tier: with two ferries behind a load balancer, the
// deal engine's report of an offer the leader had just made reached the
// other ferry before its read models applied the offer's aggregate; the
// 404 it answered is final to a deal engine, and the aggregate stayed
// DEAL_PENDING. A report for an aggregate the read models do not know is
// 404 only when they have applied the whole log; else 503, retried.
func TestAReportForAnAggregateTheReadModelsMayNotHaveYetIsRetried(t *testing.T) {
	store, err := projections.Open(filepath.Join(t.TempDir(), "views.db"), 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	const token = "report-token"
	report := `{"aggregate":"424242","status":"published","deals":[{"provider":"f01000","dealId":1}]}`
	cases := []struct {
		name   string
		behind func(context.Context, uint64) (bool, error)
		status int
		msg    string
	}{
		{"read models at the log's end: unknown, 404", func(context.Context, uint64) (bool, error) { return false, nil }, 404, "unknown aggregate"},
		{"read models behind the log: retry, 503", func(context.Context, uint64) (bool, error) { return true, nil }, 503, "behind the aggregate log: retry"},
		{"the log's end cannot be asked for: retry, 503", func(context.Context, uint64) (bool, error) { return false, errors.New("no responders") }, 503, "cannot be compared"},
		{"no way to tell (a single process): 404", nil, 404, "unknown aggregate"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := &API{Store: store, ReportToken: token, Behind: tc.behind, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			req := httptest.NewRequest(http.MethodPost, "/v1/deals/report", strings.NewReader(report))
			req.Header.Set("Authorization", "Bearer "+token)
			rec := httptest.NewRecorder()
			a.Handler().ServeHTTP(rec, req)
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.msg) {
				t.Fatalf("got %d %s, want %d mentioning %q", rec.Code, rec.Body, tc.status, tc.msg)
			}
		})
	}
}

// The same tier, later: a ferry restarted after a SIGKILL read the report's
// aggregate while its read models were still catching up (not there), and
// by the time it asked whether they were behind they had applied the whole
// log, so it answered 404 and the aggregate stayed DEAL_PENDING. Whether
// the read models are behind is asked of what they had applied before the
// read, not after.
func TestAReportReadBeforeTheReadModelsCaughtUpIsRetried(t *testing.T) {
	store, err := projections.Open(filepath.Join(t.TempDir(), "views.db"), 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	// The aggregate log: two CARs folded into aggregate 1, closed by the
	// operator (READY).
	fold := aggregator.New(events.Settings{DealSize: 4 << 20, MinPayload: 4 << 20, MaxWait: time.Hour})
	var logged []projections.LoggedBatch
	for i, ev := range []events.Event{testutil.Replicated(1, 1000, true), testutil.Replicated(2, 2000, true),
		&events.AggregateClose{Aggregate: 1, By: "test"}} {
		if b := fold.Apply(uint64(i+1), testutil.MustEncode(ev)); len(b.Decisions) > 0 {
			logged = append(logged, projections.LoggedBatch{Seq: uint64(len(logged) + 1), Batch: b})
		}
	}
	last := logged[len(logged)-1].Seq
	// The read models apply the log between the report's read and the
	// question whether they are behind.
	behind := func(_ context.Context, applied uint64) (bool, error) {
		if err := store.Apply(logged); err != nil {
			return false, err
		}
		return applied < last, nil
	}
	const token = "report-token"
	a := &API{Store: store, ReportToken: token, Behind: behind, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	report := `{"aggregate":"1","status":"published","deals":[{"provider":"f01000","dealId":1}]}`
	req := httptest.NewRequest(http.MethodPost, "/v1/deals/report", strings.NewReader(report))
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	a.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "retry") {
		t.Fatalf("got %d %s, want 503 (retry): the read models did not know aggregate 1 when they were read", rec.Code, rec.Body)
	}
}
