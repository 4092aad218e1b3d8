package api

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/projections"
	"github.com/ferry-dev/ferry/spade"
	"github.com/ferry-dev/ferry/wire"
)

// Limits of the HTTP front door.
const (
	// MaxCarsBody bounds a POST /v1/cars body.
	MaxCarsBody = 16 << 20
	// MaxCarsPerRequest bounds the events of one POST /v1/cars.
	MaxCarsPerRequest = 10000
	// MaxReportBody bounds a deal report.
	MaxReportBody = 4 << 20
	// MaxWritesInFlight bounds concurrent POST /v1/cars; more are
	// answered 429 at once rather than queued in memory.
	MaxWritesInFlight = 32
	// MaxReportsInFlight bounds concurrent deal reports, in slots of their
	// own: producers' writes cannot crowd the deal engine out.
	MaxReportsInFlight = 8
	// DefaultPageLimit and MaxPageLimit bound listings.
	DefaultPageLimit = 1000
	MaxPageLimit     = 10000
)

// API serves ferry's HTTP interface from the read models, and takes writes
// by publishing input events.
type API struct {
	Store *projections.Store
	// Pins is the pins read model; nil leaves the pin routes unserved.
	Pins     *projections.PinStore
	Pub      *jetlog.Publisher
	DealSize uint64
	// WriteToken guards POST /v1/cars and admin calls; empty leaves them open.
	WriteToken string
	// ReportToken guards POST /v1/deals/report; empty refuses every report.
	ReportToken string
	// ReadToken, when set, guards the GET routes (not /healthz and
	// /metrics, which monitoring reads); the write token opens them too.
	ReadToken string
	Metrics   http.Handler
	// Health reports why ferry is unhealthy, or nil.
	Health func() error
	// Behind reports whether the aggregate log, as its stream leader
	// holds it now, goes past applied, a sequence the read models had
	// applied (nil: never behind). A deal report for an aggregate they do not
	// know is then answered 503, to be retried, instead of 404: with
	// several ferries behind a load balancer the report of an offer one
	// made may reach another whose read models have not applied the
	// offer's aggregate yet.
	Behind func(ctx context.Context, applied uint64) (bool, error)
	// PieceWork returns the last failed attempt of a QUEUED CAR's piece
	// work, nil when none is on record (nil func: never asked).
	PieceWork func(ctx context.Context, car string) (*wire.WorkAttempt, error)
	Log       *slog.Logger
	// Policy returns the settings the log is folded under now (nil:
	// POST /v1/settings answers 503).
	Policy func(ctx context.Context) (events.Settings, error)
	// Limits bound how slowly a write's body may arrive.
	Limits Limits

	writes, reports chan struct{}
	refused         refusals
}

// Handler routes the API.
func (a *API) Handler() http.Handler {
	a.writes = make(chan struct{}, MaxWritesInFlight)
	a.reports = make(chan struct{}, MaxReportsInFlight)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/cars", a.auth(a.WriteToken, true, a.limit(a.writes, "writes", a.postCars)))
	mux.HandleFunc("GET /v1/cars/{cid}", a.auth(a.ReadToken, true, a.getCar))
	mux.HandleFunc("GET /v1/cars", a.auth(a.ReadToken, true, a.getCars))
	mux.HandleFunc("POST /v1/cars/status", a.auth(a.ReadToken, true, a.postCarsStatus))
	mux.HandleFunc("GET /v1/aggregates", a.auth(a.ReadToken, true, a.listAggregates))
	mux.HandleFunc("GET /v1/aggregates/{id}", a.auth(a.ReadToken, true, a.getAggregate))
	mux.HandleFunc("GET /v1/aggregates/{id}/manifest", a.auth(a.ReadToken, true, a.getManifest))
	mux.HandleFunc("GET /v1/settings", a.auth(a.ReadToken, true, a.getSettings))
	mux.HandleFunc("POST /v1/aggregates/{id}/close", a.auth(a.WriteToken, true, a.closeAggregate))
	mux.HandleFunc("POST /v1/aggregates/{id}/reoffer", a.auth(a.WriteToken, true, a.reofferAggregate))
	mux.HandleFunc("POST /v1/aggregates/{id}/fail", a.auth(a.WriteToken, true, a.failAggregate))
	mux.HandleFunc("POST /v1/settings", a.auth(a.WriteToken, true, a.postSettings))
	mux.HandleFunc("POST /v1/deals/report", a.authOr(a.ReportToken, false, a.limit(a.reports, "reports", a.postReport), a.noteRefused))
	a.pinRoutes(mux)
	mux.HandleFunc("GET /healthz", a.healthz)
	if a.Metrics != nil {
		mux.Handle("GET /metrics", a.Metrics)
	}
	return mux
}

// auth requires "Authorization: Bearer <token>", compared in constant
// time. An empty token leaves the route open when openIfUnset, and closes
// it otherwise.
func (a *API) auth(token string, openIfUnset bool, h http.HandlerFunc) http.HandlerFunc {
	return a.authOr(token, openIfUnset, h, nil)
}

// authOr is auth that tells refused, when not nil, about each request it
// refuses, before answering it.
func (a *API) authOr(token string, openIfUnset bool, h http.HandlerFunc, refused func(*http.Request, string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if token == "" {
			if openIfUnset {
				h(w, r)
				return
			}
			const why = "this endpoint is disabled: no token is configured"
			if refused != nil {
				refused(r, "403 "+why)
			}
			writeErr(w, http.StatusForbidden, why)
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !a.admits(token, got) {
			const why = "missing or wrong bearer token"
			if refused != nil {
				refused(r, "401 "+why)
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="ferry"`)
			writeErr(w, http.StatusUnauthorized, why)
			return
		}
		h(w, r)
	}
}

// admits says whether got is the route's token, or the write token on a
// read route: whoever may write may read, so one client token (ferry's
// --token) does both.
func (a *API) admits(token, got string) bool {
	ok := subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
	if token == a.ReadToken && a.WriteToken != "" {
		ok = subtle.ConstantTimeCompare([]byte(got), []byte(a.WriteToken)) == 1 || ok
	}
	return ok
}

// writeJSON answers with compact JSON in one write with its length:
// indenting and chunked writes were most of a status request's CPU.
func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		status, data = http.StatusInternalServerError, []byte(`{"error":"encoding the answer failed"}`)
	}
	writeBody(w, status, append(data, '\n'))
}

var jsonType = []string{"application/json"}

// writeBody writes a JSON answer in one write, with its length.
func writeBody(w http.ResponseWriter, status int, data []byte) {
	h := w.Header()
	h["Content-Type"] = jsonType // canonical keys, set without parsing
	h["Content-Length"] = []string{strconv.Itoa(len(data))}
	w.WriteHeader(status)
	_, _ = w.Write(data)
}

func writeErr(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// storeErr maps store errors to statuses.
func storeErr(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, projections.ErrNotFound):
		writeErr(w, http.StatusNotFound, err.Error())
	case errors.Is(err, projections.ErrBadRef):
		writeErr(w, http.StatusBadRequest, err.Error())
	default:
		writeErr(w, http.StatusInternalServerError, err.Error())
	}
}

func (a *API) getCar(w http.ResponseWriter, r *http.Request) {
	car, err := events.CanonicalCID(r.PathValue("cid"))
	if err != nil {
		writeErr(w, http.StatusBadRequest, fmt.Sprintf("%q is not a CID: %v", r.PathValue("cid"), err))
		return
	}
	buf := answers.Get().(*[]byte)
	defer answers.Put(buf)
	data, err := a.appendCar(r.Context(), (*buf)[:0], car)
	if err != nil {
		storeErr(w, err)
		return
	}
	*buf = append(data, '\n')
	writeBody(w, http.StatusOK, *buf)
}

// answers recycles the buffers of CAR answers (~6 KB with a proof): the
// status API's hottest allocation.
var answers = sync.Pool{New: func() any { b := make([]byte, 0, 8192); return &b }}

func intParam(r *http.Request, name string, def, max int) (int, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s: %q is not a non-negative number", name, s)
	}
	return min(n, max), nil
}

var states = map[string]bool{aggregator.Ingesting: true, aggregator.Ready: true, aggregator.DealPending: true,
	aggregator.DealProcessed: true, aggregator.DealFailed: true, aggregator.Released: true}

// listAggregates is GET /v1/aggregates?state=&group=&after=&limit=: a
// group= present but empty selects the shared pool's aggregates.
func (a *API) listAggregates(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := projections.AggregateFilter{State: strings.ToUpper(q.Get("state"))}
	if f.State != "" && !states[f.State] {
		writeErr(w, http.StatusBadRequest, fmt.Sprintf("state: %q is not an aggregate state", f.State))
		return
	}
	if q.Has("group") {
		g := q.Get("group")
		f.Group = &g
	}
	limit, err := intParam(r, "limit", 100, MaxPageLimit)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	after, err := intParam(r, "after", 0, int(^uint(0)>>1))
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	list, err := a.Store.AggregatesWhere(f, uint64(after), limit)
	if err != nil {
		storeErr(w, err)
		return
	}
	out := map[string]any{"aggregates": list}
	if len(list) == limit && limit > 0 {
		out["next"] = list[len(list)-1].ID
	}
	if list == nil {
		out["aggregates"] = []wire.AggregateView{}
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) getAggregate(w http.ResponseWriter, r *http.Request) {
	limit, err := intParam(r, "limit", DefaultPageLimit, MaxPageLimit)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	after := -1
	if r.URL.Query().Get("after") != "" {
		if after, err = intParam(r, "after", 0, int(^uint32(0)>>1)); err != nil {
			writeErr(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	v, err := a.Store.Aggregate(r.PathValue("id"), after, limit)
	if err != nil {
		storeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, a.withRefused(v))
}

func (a *API) getManifest(w http.ResponseWriter, r *http.Request) {
	m, err := spade.ReadManifest(a.Store, r.PathValue("id"))
	if err != nil {
		storeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, m)
}

func (a *API) closeAggregate(w http.ResponseWriter, r *http.Request) {
	v, ok := a.pathAggregate(w, r, aggregator.Ingesting)
	if !ok {
		return
	}
	a.order(w, r, v.ID, &events.AggregateClose{Aggregate: v.ID, By: byHTTP()}, "close requested")
}

// byHTTP names an operator's order that came over HTTP, for the record;
// the time also keeps a repeated order from being taken for a retry.
func byHTTP() string { return "http@" + time.Now().UTC().Format(time.RFC3339Nano) }

// order publishes an operator's order about aggregate id and answers 202.
func (a *API) order(w http.ResponseWriter, r *http.Request, id uint64, ev events.Event, status string) {
	pub, err := a.Pub.Publish(r.Context(), ev)
	if err != nil {
		writeErr(w, publishStatus(jetlog.IsStorageFull(err)), err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"aggregate": id, "status": status, "seq": pub.Seq})
}

// pathAggregate reads the aggregate of the path and checks it is in one
// of states, answering the request itself (400, 404, 409) when it is not.
func (a *API) pathAggregate(w http.ResponseWriter, r *http.Request, states ...string) (*wire.AggregateView, bool) {
	if _, err := strconv.ParseUint(r.PathValue("id"), 10, 64); err != nil {
		writeErr(w, http.StatusBadRequest, "aggregate id must be a number")
		return nil, false
	}
	v, err := a.Store.Aggregate(r.PathValue("id"), 0, 0)
	if err != nil {
		storeErr(w, err)
		return nil, false
	}
	for _, st := range states {
		if v.State == st {
			return v, true
		}
	}
	writeErr(w, http.StatusConflict, fmt.Sprintf("aggregate %d is %s, not %s", v.ID, v.State, strings.Join(states, " or ")))
	return nil, false
}

// reofferAggregate is POST /v1/aggregates/{id}/reoffer: offer a READY,
// DEAL_PENDING or DEAL_FAILED aggregate again (the fold decides whether a
// failed one still holds its CARs).
func (a *API) reofferAggregate(w http.ResponseWriter, r *http.Request) {
	v, ok := a.pathAggregate(w, r, aggregator.Ready, aggregator.DealPending, aggregator.DealFailed)
	if !ok {
		return
	}
	a.order(w, r, v.ID, &events.AggregateReoffer{Aggregate: v.ID, By: byHTTP()}, "reoffer requested")
}

// MaxOrderBody bounds the body of an operator's order.
const MaxOrderBody = 4 << 10

// failAggregate is POST /v1/aggregates/{id}/fail with an optional body
// {"reason": "…"}: treat the deal as failed.
func (a *API) failAggregate(w http.ResponseWriter, r *http.Request) {
	v, ok := a.pathAggregate(w, r, aggregator.Ready, aggregator.DealPending)
	if !ok {
		return
	}
	var body struct {
		Reason string `json:"reason"`
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxOrderBody))
	if err != nil {
		writeErr(w, http.StatusRequestEntityTooLarge, err.Error())
		return
	}
	if len(strings.TrimSpace(string(data))) > 0 {
		if err := json.Unmarshal(data, &body); err != nil {
			writeErr(w, http.StatusBadRequest, "body: want {\"reason\": \"…\"}: "+err.Error())
			return
		}
	}
	a.order(w, r, v.ID, &events.AggregateFail{Aggregate: v.ID, Reason: body.Reason, By: byHTTP()}, "fail requested")
}

func (a *API) postReport(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r, MaxReportBody)
	if !ok {
		return
	}
	rep, err := spade.ParseReport(body)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	// What the read models had applied before the read: asked after it,
	// a ferry whose read models caught up in between would call the
	// aggregate unknown for good.
	applied := a.Store.AggSeq()
	agg, err := a.Store.Aggregate(rep.Aggregate, 0, 0)
	if errors.Is(err, projections.ErrNotFound) || errors.Is(err, projections.ErrBadRef) || (err == nil && agg.State == aggregator.Ingesting) {
		if behind, why := a.behind(r.Context(), applied); behind {
			writeErr(w, http.StatusServiceUnavailable, fmt.Sprintf("aggregate %q is not in the read models, which %s: retry", rep.Aggregate, why))
			return
		}
		writeErr(w, http.StatusNotFound, fmt.Sprintf("unknown aggregate %q: no closed aggregate has this id or piece CID", rep.Aggregate))
		return
	}
	var refusal string
	if err == nil {
		rep.AggregateID = agg.ID
		if reason := unchanged(agg, rep); reason != "" {
			writeJSON(w, http.StatusOK, map[string]any{"status": "ignored", "reason": reason})
			return
		}
		refusal = refused(agg, rep)
	}
	pub, err := a.Pub.Publish(r.Context(), rep)
	if err != nil {
		writeErr(w, publishStatus(jetlog.IsStorageFull(err)), err.Error())
		return
	}
	if refusal != "" {
		// Deals made for an aggregate ferry has given up on are worth
		// keeping on record, as a rejected car.replicated is; the engine
		// is told they count for nothing.
		writeJSON(w, http.StatusConflict, map[string]any{"status": "rejected", "reason": refusal, "seq": pub.Seq})
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"status": "accepted", "seq": pub.Seq, "duplicate": pub.Duplicate})
}

// behind reports whether read models that had applied the aggregate log
// up to applied may not know an aggregate yet, and why: the log goes
// past it, or the log's end cannot be asked for (its stream has no
// leader), when no answer is safer than a final one.
func (a *API) behind(ctx context.Context, applied uint64) (bool, string) {
	if a.Behind == nil {
		return false, ""
	}
	behind, err := a.Behind(ctx, applied)
	if err != nil {
		return true, "cannot be compared with the aggregate log now (" + err.Error() + ")"
	}
	return behind, "are behind the aggregate log"
}

// refused says why the fold will refuse a report that is not a mere
// repeat (unchanged): deals for an aggregate that cannot take them. Like
// unchanged, it reads the read models; the fold decides on the log.
func refused(agg *wire.AggregateView, rep *events.DealReport) string {
	if rep.Status == events.StatusFailed {
		return ""
	}
	switch agg.State {
	case aggregator.Ready, aggregator.DealPending, aggregator.DealProcessed:
		return ""
	}
	return fmt.Sprintf("aggregate %d is %s; reported deals change nothing", agg.ID, agg.State)
}

// publishStatus answers a failed publish: 507 Insufficient Storage when the
// log's disk is full (the caller retries once space is freed), else 503.
func publishStatus(full bool) int {
	if full {
		return http.StatusInsufficientStorage
	}
	return http.StatusServiceUnavailable
}

func (a *API) healthz(w http.ResponseWriter, r *http.Request) {
	if a.Health != nil {
		if err := a.Health(); err != nil {
			writeErr(w, http.StatusServiceUnavailable, err.Error())
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "aggregateLogSeq": a.Store.AggSeq(), "lastInput": a.Store.LastIn()})
}

// unchanged says why a report would change nothing, as the fold would
// decide; the fold decides again on the log, this answer is a courtesy.
func unchanged(agg *wire.AggregateView, rep *events.DealReport) string {
	switch {
	case rep.Status == events.StatusFailed && agg.State == aggregator.DealProcessed:
		return fmt.Sprintf("aggregate %d has deals; a failure changes nothing", agg.ID)
	case rep.Status == events.StatusFailed && agg.State == aggregator.DealFailed:
		return fmt.Sprintf("aggregate %d has failed already", agg.ID)
	case rep.Status == events.StatusFailed:
		return ""
	}
	known := map[events.Deal]bool{}
	for _, d := range agg.Deals {
		known[events.Deal{Provider: d.Provider, DealID: d.DealID}] = true
	}
	for _, d := range rep.Deals {
		if !known[events.Deal{Provider: d.Provider, DealID: d.DealID}] {
			return ""
		}
	}
	return fmt.Sprintf("aggregate %d already has these deals", agg.ID)
}
