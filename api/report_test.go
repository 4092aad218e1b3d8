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
		behind func(context.Context) (bool, error)
		status int
		msg    string
	}{
		{"read models at the log's end: unknown, 404", func(context.Context) (bool, error) { return false, nil }, 404, "unknown aggregate"},
		{"read models behind the log: retry, 503", func(context.Context) (bool, error) { return true, nil }, 503, "behind the aggregate log: retry"},
		{"the log's end cannot be asked for: retry, 503", func(context.Context) (bool, error) { return false, errors.New("no responders") }, 503, "cannot be compared"},
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
