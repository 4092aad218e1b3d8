package projections

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ipfs/go-cid"
)

// Outcomes of one submitted car.replicated.
const (
	Accepted  = "accepted"
	Duplicate = "duplicate"
	Refused   = "rejected"
)

// CarResult answers one event of POST /v1/cars.
type CarResult struct {
	Car    string `json:"car"`
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	Seq    uint64 `json:"seq,omitempty"`
	// full: the publish failed because the log's disk is full.
	full bool
}

// postCars takes one car.replicated object or an array of them. Each is
// answered on its own: accepted, duplicate, or rejected with the reason.
// Rejected events are still appended to the input log, so the rejection is
// on record, as it is for events published on NATS directly.
func (a *API) postCars(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxCarsBody))
	if err != nil {
		writeErr(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", MaxCarsBody))
		return
	}
	raws, single, err := splitBody(body)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	results := make([]CarResult, len(raws))
	for i, raw := range raws {
		results[i] = a.submit(r, raw)
	}
	if !single {
		writeJSON(w, http.StatusOK, map[string]any{"results": results})
		return
	}
	status := map[string]int{Accepted: http.StatusAccepted, Duplicate: http.StatusOK, Refused: http.StatusUnprocessableEntity}[results[0].Status]
	if status == 0 {
		status = publishStatus(results[0].full)
	}
	writeJSON(w, status, results[0])
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

// submit decodes, validates and publishes one event.
func (a *API) submit(r *http.Request, raw json.RawMessage) CarResult {
	e, reason := decodeReplicated(raw)
	res := CarResult{Car: e.Car}
	if reason == "" {
		reason = e.Validate(a.DealSize)
	}
	if reason == "" {
		if c, err := a.Store.Car(cid.MustParse(e.Car).String()); err == nil && c.State != aggregator.Rejected {
			res.Status = Duplicate
			return res
		}
	}
	pub, err := a.Pub.Publish(r.Context(), e)
	switch {
	case err != nil:
		res.Status, res.Reason, res.full = "error", err.Error(), events.IsStorageFull(err)
	case reason != "":
		res.Status, res.Reason, res.Seq = Refused, reason, pub.Seq
	case pub.Duplicate:
		res.Status = Duplicate
	default:
		res.Status, res.Seq = Accepted, pub.Seq
	}
	return res
}

// decodeReplicated reads a car.replicated; type and version may be left
// out over HTTP, where the route says what the event is.
func decodeReplicated(raw json.RawMessage) (*events.CarReplicated, string) {
	var e events.CarReplicated
	if err := json.Unmarshal(raw, &e); err != nil {
		var peek struct {
			Car string `json:"car"`
		}
		_ = json.Unmarshal(raw, &peek)
		e = events.CarReplicated{Car: peek.Car}
		return &e, fmt.Sprintf("not a car.replicated event: %v", err)
	}
	if e.Type != "" && e.Type != events.TypeCarReplicated {
		return &e, fmt.Sprintf("type %q: this endpoint takes car.replicated", e.Type)
	}
	if e.Version != 0 && e.Version != events.Version {
		return &e, fmt.Sprintf("version %d: this ferry reads version %d", e.Version, events.Version)
	}
	return &e, ""
}
