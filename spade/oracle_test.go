package spade

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/klauspost/compress/zstd"
)

const oracleJSON = `{"state_epoch": 4500000, "active_replicas": [
 {"piece_cid": "baga6ea4seaqpiece1", "piece_log2_size": 35, "contracts": [
   {"provider_id": 1000, "legacy_market_id": 12, "legacy_market_end_epoch": 6000000},
   {"provider_id": 2002, "legacy_market_id": 13, "legacy_market_end_epoch": 6000100}]},
 {"piece_cid": "baga6ea4seaqpiece2", "piece_log2_size": 34, "contracts": []},
 {"piece_cid": "baga6ea4seaqpiece3", "piece_log2_size": 35, "contracts": [
   {"provider_id": 3, "legacy_market_id": 99, "legacy_market_end_epoch": 7000000}]}],
 "unknown_field": true}`

func zstdOf(t *testing.T, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(data)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestParseOracleReadsPlainAndZstdDocuments(t *testing.T) {
	for name, body := range map[string][]byte{
		"plain": []byte(oracleJSON),
		"zstd":  zstdOf(t, []byte(oracleJSON)),
	} {
		t.Run(name, func(t *testing.T) {
			doc, err := ParseOracle(bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if doc.StateEpoch != 4500000 || len(doc.ActiveReplicas) != 3 || doc.ActiveReplicas[0].PieceLog2Size != 35 {
				t.Fatalf("doc %+v", doc)
			}
			reps := doc.Reports()
			if len(reps) != 2 {
				t.Fatalf("%d reports, want 2 (a replica without contracts has no deals)", len(reps))
			}
			want := events.Deal{Provider: "f02002", DealID: 13, ExpirationEpoch: 6000100}
			if r := reps[0]; r.Aggregate != "baga6ea4seaqpiece1" || r.Status != events.StatusActive || len(r.Deals) != 2 || r.Deals[1] != want {
				t.Fatalf("report %+v, want piece1 active with deal %+v", r, want)
			}
			if reps[0].Type != events.TypeDealReport || reps[0].Version != events.Version {
				t.Fatalf("report header %+v", reps[0].Header)
			}
		})
	}
}

func TestParseOracleRejectsBadDocuments(t *testing.T) {
	tests := []struct {
		name string
		body []byte
	}{
		{"text that is not JSON is rejected", []byte("<html>oops</html>")},
		{"a document of the wrong shape is rejected", []byte(`{"active_replicas": {"piece_cid": 1}}`)},
		{"a truncated zstd stream is rejected", zstdOf(t, []byte(oracleJSON))[:20]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseOracle(bytes.NewReader(tt.body)); !errors.Is(err, ErrBadOracle) {
				t.Fatalf("err = %v, want ErrBadOracle", err)
			}
		})
	}
}

func TestLimitReaderReportsADocumentOverItsBound(t *testing.T) {
	lr := &limitReader{r: strings.NewReader(`{"state_epoch": 1}`), left: 5}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(lr); !errors.Is(err, ErrTooLarge) || !lr.over {
		t.Fatalf("err = %v, over = %v", err, lr.over)
	}
}

// oracleServer serves body, swapped by the test.
func oracleServer(t *testing.T, body *atomic.Value) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(body.Load().([]byte))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestOraclePollerReturnsOnlyDealsNotSeenBefore(t *testing.T) {
	var body atomic.Value
	body.Store(zstdOf(t, []byte(oracleJSON)))
	p := &OraclePoller{URL: oracleServer(t, &body).URL, Want: func(v1 string) bool { return v1 != "baga6ea4seaqpiece3" }}
	first, err := p.Poll(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != 1 || first[0].Aggregate != "baga6ea4seaqpiece1" || len(first[0].Deals) != 2 {
		t.Fatalf("first poll %+v, want piece1's two deals only", first)
	}
	body.Store([]byte(strings.Replace(oracleJSON, `"contracts": []`,
		`"contracts": [{"provider_id": 7, "legacy_market_id": 70, "legacy_market_end_epoch": 1}]`, 1)))
	second, err := p.Poll(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(second) != 1 || second[0].Aggregate != "baga6ea4seaqpiece2" || second[0].Deals[0].DealID != 70 {
		t.Fatalf("second poll %+v, want only piece2's new deal", second)
	}
	p.Forget(first)
	if third, _ := p.Poll(t.Context()); len(third) != 1 || third[0].Aggregate != "baga6ea4seaqpiece1" {
		t.Fatalf("after Forget %+v, want piece1 again", third)
	}
}

func TestOraclePollerReportsAFailedFetch(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	p := &OraclePoller{URL: srv.URL + "/oracle.zst"}
	if _, err := p.Poll(t.Context()); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("err = %v, want the 404", err)
	}
}

func TestOraclePollerRunHandsOverNewDealsUntilCancelled(t *testing.T) {
	var body atomic.Value
	body.Store([]byte(oracleJSON))
	p := &OraclePoller{URL: oracleServer(t, &body).URL, Interval: time.Millisecond}
	ctx, cancel := context.WithCancel(t.Context())
	var batches, failures atomic.Int32
	err := p.Run(ctx, func(ctx context.Context, reps []events.DealReport) error {
		if failures.Add(1) == 1 {
			return errors.New("input stream unavailable") // forgotten, so it comes again
		}
		batches.Add(1)
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	if got := batches.Load(); got != 1 {
		t.Fatalf("%d batches handled, want 1 (after a failed first)", got)
	}
}
