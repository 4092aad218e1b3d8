package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/wire"
)

// Outcomes of one submitted car.replicated.
// postCars takes one car.replicated object or an array of them. Each is
// answered on its own, with what the fold decides of it:
//   - accepted (stored; the fold accepts it),
//   - duplicate (a copy of an accepted CAR's event; nothing stored),
//   - conflict (a copy of an accepted CAR whose size or md5 differ; stored,
//     so the conflict is on the record, and the accepted copy stands),
//   - rejected with the reason: the event breaks a rule, and it is not
//     stored. The fold would reject it by the same rules (events.Check
//     under the log's deal size), so not storing it loses nothing, and it
//     holds nothing: a corrected event for the CAR is taken at once,
//   - error with the reason: it could not be stored (see failedUnstored
//     for the status of an array's answer).
func (a *API) postCars(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r, MaxCarsBody)
	if !ok {
		return
	}
	raws, single, err := splitBody(body)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	results := make([]wire.CarResult, len(raws))
	var full bool // an event's publish failed on a full disk
	for i, raw := range raws {
		var f bool
		results[i], f = a.submit(r, raw)
		full = full || f
	}
	if !single {
		status := http.StatusOK
		if failedUnstored(results) {
			status = publishStatus(full)
		}
		writeJSON(w, status, map[string]any{"results": results})
		return
	}
	status := map[string]int{wire.Accepted: http.StatusAccepted, wire.Duplicate: http.StatusOK, wire.Conflict: http.StatusConflict,
		wire.Rejected: http.StatusUnprocessableEntity}[results[0].Status]
	if status == 0 {
		status = publishStatus(full)
	}
	writeJSON(w, status, results[0])
}

// failedUnstored reports whether an event of an array failed and none was
// stored: the whole request may then be sent again as it is (the other
// answers, duplicate and rejected, are the same the second time), and a
// client that reads only the status code must not take it as done. Once
// something was stored the answer is 200 and the failed events are those
// whose status is "error".
func failedUnstored(results []wire.CarResult) bool {
	failed := false
	for _, res := range results {
		if res.Seq != 0 {
			return false
		}
		failed = failed || res.Status == wire.Failed
	}
	return failed
}

// splitBody reads a JSON object or array of objects.
func splitBody(body []byte) ([]json.RawMessage, bool, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, false, errors.New("empty body: send a car.replicated object or an array of them")
	}
	if body[0] == '{' {
		return []json.RawMessage{body}, true, nil
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(body, &raws); err != nil {
		return nil, false, fmt.Errorf("body is not a JSON object or array: %v", err)
	}
	if len(raws) == 0 || len(raws) > MaxCarsPerRequest {
		return nil, false, fmt.Errorf("send 1 to %d events, not %d", MaxCarsPerRequest, len(raws))
	}
	return raws, false, nil
}

// submit decodes, validates and publishes one event; full says its
// publish failed because the log's disk is full.
func (a *API) submit(r *http.Request, raw json.RawMessage) (res wire.CarResult, full bool) {
	e, refused := decodeReplicated(raw)
	if refused == nil {
		refused = e.Validate(aggregator.DealRoom(a.DealSize))
	}
	car, _ := events.CarCID(e.Car)
	res.Car = car
	if car == "" {
		res.Car = events.Truncate(e.Car, events.MaxCIDText)
	}
	if refused != nil {
		res.Status, res.Reason = wire.Rejected, refused.Error()
		return res, false
	}
	status := wire.Accepted
	if c, err := a.Store.Car(car); err == nil && c.State != aggregator.Rejected {
		diff := copyDiff(c, e)
		if diff == "" {
			res.Status = wire.Duplicate
			return res, false
		}
		// Stored, so that the conflict is on the record beside the copy
		// that stands.
		status, res.Reason = wire.Conflict, events.ReasonConflict+": "+diff
	}
	pub, err := a.Pub.Publish(r.Context(), e)
	switch {
	case err != nil:
		res.Status, res.Reason, full = wire.Failed, err.Error(), jetlog.IsStorageFull(err)
	case pub.Duplicate && status == wire.Accepted:
		res.Status = wire.Duplicate
	default:
		res.Status, res.Seq = status, pub.Seq
	}
	return res, full
}

// copyDiff names the fields in which e differs from the accepted copy c
// of its CAR, "" when it is the same copy.
func copyDiff(c *wire.CarView, e *events.CarReplicated) string {
	var diffs []string
	if c.Size != e.Size {
		diffs = append(diffs, fmt.Sprintf("size %d, the accepted copy's %d", e.Size, c.Size))
	}
	if !strings.EqualFold(c.MD5, e.MD5) {
		diffs = append(diffs, fmt.Sprintf("md5 %s, the accepted copy's %s", e.MD5, c.MD5))
	}
	return strings.Join(diffs, "; ")
}

// decodeReplicated reads a car.replicated and checks what only the HTTP
// route allows: type and version may be left out, where the route says
// what the event is; anything else the event says of itself must be
// right. The error's message is the reason for the producer; the event
// is never nil, so that a refusal can name the CAR.
func decodeReplicated(raw json.RawMessage) (*events.CarReplicated, error) {
	var e events.CarReplicated
	if len(raw) > events.MaxInputBytes {
		var peek struct {
			Car string `json:"car"`
		}
		_ = json.Unmarshal(raw, &peek)
		e.Car = peek.Car
		return &e, fmt.Errorf("event of %d bytes, more than the %d an input may have", len(raw), events.MaxInputBytes)
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		var peek struct {
			Car string `json:"car"`
		}
		_ = json.Unmarshal(raw, &peek)
		e = events.CarReplicated{Car: peek.Car}
		return &e, fmt.Errorf("not a car.replicated event: %v", err)
	}
	if e.Type != "" && e.Type != events.TypeCarReplicated {
		return &e, fmt.Errorf("type %s: this endpoint takes car.replicated", events.Excerpt(e.Type))
	}
	if e.Version != 0 && e.Version != events.Version {
		return &e, fmt.Errorf("version %d: this ferry reads version %d", e.Version, events.Version)
	}
	return &e, nil
}
