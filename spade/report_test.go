package spade

import (
	"errors"
	"strings"
	"testing"

	"github.com/ferry-dev/ferry/events"
)

func TestParseReportAcceptsEachStatus(t *testing.T) {
	v1 := randomPiece(1, 1<<20, 0).V1().String()
	v2 := randomPiece(1, 1<<20, 1000).MustV2().String()
	tests := []struct {
		name string
		body string
	}{
		{"a published report naming the aggregate by v2 piece is good",
			`{"aggregate":"` + v2 + `","status":"published","deals":[{"provider":"f01000","dealId":5,"expirationEpoch":9}]}`},
		{"an active report naming the aggregate by v1 piece is good",
			`{"aggregate":"` + v1 + `","status":"active","deals":[{"provider":"f01000","dealId":5}]}`},
		{"a failed report naming the aggregate by id is good",
			`{"aggregate":"42","status":"failed","reason":"provider offline","extra":"ignored"}`},
		{"a report typed as a deal.report event is good",
			`{"type":"deal.report","version":1,"aggregate":"42","status":"failed","reason":"x"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, err := ParseReport([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if rep.Type != events.TypeDealReport || rep.Version != events.Version {
				t.Fatalf("header %+v, want a deal.report v1 event", rep.Header)
			}
		})
	}
}

func TestParseReportRejectsMalformedReports(t *testing.T) {
	deals := `"deals":[{"provider":"f01000","dealId":5}]`
	tests := []struct {
		name string
		body string
		want string
	}{
		{"a body that is not JSON is rejected", `status=published`, "not a JSON report"},
		{"a JSON array is rejected", `[1,2]`, "not a JSON report"},
		{"a report without an aggregate is rejected", `{"status":"published",` + deals + `}`, "aggregate: missing"},
		{"an aggregate that is neither CID nor id is rejected", `{"aggregate":"agg-7","status":"published",` + deals + `}`, "neither a piece CID nor a decimal id"},
		{"an aggregate CID that is not a piece is rejected",
			`{"aggregate":"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku","status":"published",` + deals + `}`, "not a piece CID"},
		{"a report without a status is rejected", `{"aggregate":"7",` + deals + `}`, "status: missing"},
		{"an unknown status is rejected", `{"aggregate":"7","status":"sealed",` + deals + `}`, `status: "sealed"`},
		{"a published report without deals is rejected", `{"aggregate":"7","status":"published"}`, "deals: at least one"},
		{"an active report without deals is rejected", `{"aggregate":"7","status":"active","deals":[]}`, "deals: at least one"},
		{"a deal without a provider is rejected", `{"aggregate":"7","status":"published","deals":[{"dealId":5}]}`, "deals[0].provider: missing"},
		{"a deal without a deal id is rejected",
			`{"aggregate":"7","status":"active","deals":[{"provider":"f01000","dealId":5},{"provider":"f01000"}]}`, "deals[1].dealId: missing"},
		{"a deal id of the wrong JSON type is rejected", `{"aggregate":"7","status":"active","deals":[{"provider":"f01000","dealId":"5"}]}`, "not a JSON report"},
		{"a failed report without a reason is rejected", `{"aggregate":"7","status":"failed"}`, "reason: required"},
		{"another event type is rejected", `{"type":"car.piece","aggregate":"7","status":"failed","reason":"x"}`, "type:"},
		{"another version is rejected", `{"version":2,"aggregate":"7","status":"failed","reason":"x"}`, "version: 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseReport([]byte(tt.body))
			if !errors.Is(err, ErrBadReport) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseReport = %v, want ErrBadReport with %q", err, tt.want)
			}
		})
	}
}

func TestParseReportRejectsAnOversizedBody(t *testing.T) {
	body := `{"aggregate":"7","status":"failed","reason":"` + strings.Repeat("x", MaxReportSize) + `"}`
	if _, err := ParseReport([]byte(body)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("ParseReport = %v, want ErrTooLarge", err)
	}
}
