package spade

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/piece"
	"github.com/ipfs/go-cid"
)

// MaxReportSize bounds a report body: a report lists the deals of one
// aggregate, a few hundred bytes each.
const MaxReportSize = 1 << 20

// ParseReport reads the report a deal engine POSTs to reportUrl:
//
//	{"aggregate": "bafkzcib…",            (piece CID v2 or v1, or ferry's decimal id)
//	 "status": "published",               (published, active or failed)
//	 "deals": [{"provider": "f01000", "dealId": 12, "expirationEpoch": 5000000}],
//	 "reason": "…"}                       (required when failed)
//
// It returns the report as an event ready to publish ("type" and "version"
// may be omitted; if present they must be deal.report and 1). The error
// wraps ErrBadReport, or ErrTooLarge past MaxReportSize, and names the field.
func ParseReport(body []byte) (*events.DealReport, error) {
	if len(body) > MaxReportSize {
		return nil, fmt.Errorf("%w: report of %d bytes, more than %d", ErrTooLarge, len(body), MaxReportSize)
	}
	var r events.DealReport
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%w: not a JSON report: %v", ErrBadReport, err)
	}
	if reason := checkReport(&r); reason != "" {
		return nil, fmt.Errorf("%w: %s", ErrBadReport, reason)
	}
	r.Header = events.Header{Type: events.TypeDealReport, Version: events.Version}
	return &r, nil
}

func checkReport(r *events.DealReport) string {
	if r.Type != "" && r.Type != events.TypeDealReport {
		return fmt.Sprintf("type: %q is not %q", r.Type, events.TypeDealReport)
	}
	if r.Version != 0 && r.Version != events.Version {
		return fmt.Sprintf("version: %d is not %d", r.Version, events.Version)
	}
	if reason := checkAggregateRef(r.Aggregate); reason != "" {
		return reason
	}
	switch r.Status {
	case events.StatusPublished, events.StatusActive:
		return checkDeals(r.Deals)
	case events.StatusFailed:
		if r.Reason == "" {
			return "reason: required when status is failed"
		}
		return ""
	case "":
		return "status: missing"
	}
	return fmt.Sprintf("status: %q is not published, active or failed", r.Status)
}

// checkAggregateRef accepts a piece CID of either form or a decimal id.
func checkAggregateRef(s string) string {
	if s == "" {
		return "aggregate: missing"
	}
	if _, err := strconv.ParseUint(s, 10, 64); err == nil {
		return ""
	}
	c, err := cid.Decode(s)
	if err != nil {
		return fmt.Sprintf("aggregate: %q is neither a piece CID nor a decimal id", s)
	}
	if _, err := piece.FromCID(c, 0); err != nil && !errors.Is(err, piece.ErrSizeNeeded) {
		return fmt.Sprintf("aggregate: %v", err)
	}
	return ""
}

func checkDeals(deals []events.Deal) string {
	if len(deals) == 0 {
		return "deals: at least one is required when status is published or active"
	}
	for i, d := range deals {
		if d.Provider == "" {
			return fmt.Sprintf("deals[%d].provider: missing", i)
		}
		if d.DealID == 0 {
			return fmt.Sprintf("deals[%d].dealId: missing", i)
		}
	}
	return ""
}
