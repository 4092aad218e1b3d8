package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/wire"
)

// ErrNotFound is returned when ferry does not know the CAR or aggregate.
var ErrNotFound = errors.New("not found")

// APIError is an error answer of the HTTP API.
type APIError struct {
	Status  int
	Message string
}

// Error is the status and ferry's reason, with no prefix: a program prints
// it after its own ("ferry: 409 Conflict: …").
func (e *APIError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// Unwrap makes a 404 match ErrNotFound.
func (e *APIError) Unwrap() error {
	if e.Status == http.StatusNotFound {
		return ErrNotFound
	}
	return nil
}

// HTTP talks to ferry's HTTP API.
type HTTP struct {
	// Base is ferry's address, e.g. http://127.0.0.1:8080.
	Base  string
	Token string
	HC    *http.Client
}

// NewHTTP returns a client of the API at base ("127.0.0.1:8080" or a URL).
func NewHTTP(base string) *HTTP {
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return &HTTP{Base: strings.TrimRight(base, "/"), HC: http.DefaultClient}
}

func (c *HTTP) do(ctx context.Context, method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HC.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 400 && resp.StatusCode != http.StatusUnprocessableEntity {
		var e struct {
			Error string `json:"error"`
			// An array of POST /v1/cars of which nothing was stored
			// answers 503 (507: disk full) with its per-event results.
			Results []wire.CarResult `json:"results"`
		}
		_ = json.Unmarshal(data, &e)
		for _, r := range e.Results {
			if e.Error == "" && r.Status == wire.Failed {
				e.Error = fmt.Sprintf("nothing of the %d events was stored: %s", len(e.Results), r.Reason)
			}
		}
		if e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		return &APIError{Status: resp.StatusCode, Message: e.Error}
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

// Car returns where a CAR is.
func (c *HTTP) Car(ctx context.Context, car string) (*wire.CarView, error) {
	var v wire.CarView
	if err := c.do(ctx, http.MethodGet, "/v1/cars/"+url.PathEscape(car), nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// Cars returns the status of many CARs, one wire.CarStatus per CID in
// the order given, from POST /v1/cars/status in calls of up to
// wire.MaxStatusCIDs CIDs. A CID ferry does not know (Status 404) or that
// is not a CID (400) is answered in its entry, not as an error.
func (c *HTTP) Cars(ctx context.Context, cids []string) ([]wire.CarStatus, error) {
	out := make([]wire.CarStatus, 0, len(cids))
	for chunk := range slices.Chunk(cids, wire.MaxStatusCIDs) {
		var page struct {
			Cars []wire.CarStatus `json:"cars"`
		}
		if err := c.do(ctx, http.MethodPost, "/v1/cars/status", map[string][]string{"cids": chunk}, &page); err != nil {
			return nil, err
		}
		out = append(out, page.Cars...)
	}
	return out, nil
}

// Aggregate returns an aggregate by id or piece CID, with up to limit
// pieces after position after (-1 for the first page).
func (c *HTTP) Aggregate(ctx context.Context, ref string, after, limit int) (*wire.AggregateView, error) {
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	if after >= 0 {
		q.Set("after", strconv.Itoa(after))
	}
	var v wire.AggregateView
	if err := c.do(ctx, http.MethodGet, "/v1/aggregates/"+url.PathEscape(ref)+"?"+q.Encode(), nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// AggregatePage is one page of the aggregate listing.
type AggregatePage struct {
	Aggregates []wire.AggregateView `json:"aggregates"`
	Next       uint64               `json:"next,omitempty"`
}

// Aggregates lists aggregates with id > after, optionally in one state.
func (c *HTTP) Aggregates(ctx context.Context, state string, after uint64, limit int) (*AggregatePage, error) {
	return c.GroupAggregates(ctx, "", state, after, limit)
}

// GroupAggregates is Aggregates of one group's aggregates ("": of every
// group and the shared pool).
func (c *HTTP) GroupAggregates(ctx context.Context, group, state string, after uint64, limit int) (*AggregatePage, error) {
	q := url.Values{"limit": {strconv.Itoa(limit)}, "after": {strconv.FormatUint(after, 10)}}
	if state != "" {
		q.Set("state", state)
	}
	if group != "" {
		q.Set("group", group)
	}
	var p AggregatePage
	if err := c.do(ctx, http.MethodGet, "/v1/aggregates?"+q.Encode(), nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Submit posts car.replicated events; each gets its own result, ferry's
// verdict on it: wire.Accepted, wire.Duplicate, wire.Rejected or
// wire.Conflict, each rejection and conflict with its reason, or
// wire.Failed ("error") when ferry could not append it. When nothing was
// stored and an event failed, the error is an *APIError of status 503
// (507: disk full) and the whole request may be sent again.
func (c *HTTP) Submit(ctx context.Context, evs []*events.CarReplicated) ([]wire.CarResult, error) {
	return c.submit(ctx, evs)
}

// SubmitEncoded is Submit for events already encoded as JSON objects (a
// caller that bounds a request's bytes encodes each event once).
func (c *HTTP) SubmitEncoded(ctx context.Context, evs []json.RawMessage) ([]wire.CarResult, error) {
	return c.submit(ctx, evs)
}

func (c *HTTP) submit(ctx context.Context, evs any) ([]wire.CarResult, error) {
	var out struct {
		Results []wire.CarResult `json:"results"`
	}
	if err := c.do(ctx, http.MethodPost, "/v1/cars", evs, &out); err != nil {
		return nil, err
	}
	return out.Results, nil
}

// CloseAggregate asks ferry to close an INGESTING aggregate now.
func (c *HTTP) CloseAggregate(ctx context.Context, id uint64) error {
	return c.order(ctx, id, "close", nil)
}

// ReofferAggregate asks ferry to offer a READY, DEAL_PENDING or given-up
// DEAL_FAILED aggregate to the deal engine again now.
func (c *HTTP) ReofferAggregate(ctx context.Context, id uint64) error {
	return c.order(ctx, id, "reoffer", nil)
}

// FailAggregate asks ferry to treat the deal of a READY or DEAL_PENDING
// aggregate as failed, for reason (may be empty).
func (c *HTTP) FailAggregate(ctx context.Context, id uint64, reason string) error {
	return c.order(ctx, id, "fail", map[string]string{"reason": reason})
}

// order posts an operator's order about an aggregate.
func (c *HTTP) order(ctx context.Context, id uint64, verb string, body any) error {
	return c.do(ctx, http.MethodPost, "/v1/aggregates/"+strconv.FormatUint(id, 10)+"/"+verb, body, nil)
}
