package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/jsonw"
	"github.com/ferry-dev/ferry/projections"
	"github.com/ferry-dev/ferry/wire"
)

// MaxStatusCIDs bounds the CIDs of one batch status call.
const MaxStatusCIDs = wire.MaxStatusCIDs

// MaxStatusBody bounds a POST /v1/cars/status body: MaxStatusCIDs CIDs of
// the longest text an input may name, quoted, with room.
const MaxStatusBody = 512 << 10

// appendCar appends GET /v1/cars/{cid}'s answer for car, a canonical CID.
// A QUEUED CAR gets its piece work's last failed attempt (PieceWork),
// spliced in as the view's last field, "work", where json.Marshal of a
// wire.CarView puts it: the other states keep the fast path untouched.
func (a *API) appendCar(ctx context.Context, dst []byte, car string) ([]byte, error) {
	start := len(dst)
	out, err := a.Store.AppendCarJSON(dst, car)
	if err != nil || a.PieceWork == nil || !bytes.HasPrefix(out[start:], queuedPrefix(car)) {
		return out, err
	}
	w, err := a.PieceWork(ctx, car)
	if err != nil {
		// The CAR's state stands without its diagnosis.
		a.logger().Warn("piece work record not read", "car", car, "err", err)
		return out, nil
	}
	if w == nil {
		return out, nil
	}
	enc, err := json.Marshal(w)
	if err != nil {
		return out, nil
	}
	out = append(append(out[:len(out)-1], `,"work":`...), enc...)
	return append(out, '}'), nil
}

// queuedPrefix is how the view of a QUEUED car starts: its "car" and
// "state" come first, and a canonical CID needs no escaping.
func queuedPrefix(car string) []byte {
	return []byte(`{"car":"` + car + `","state":"` + aggregator.Queued + `"`)
}

// getCars is GET /v1/cars?cid=…&cid=…: the batch status of the CIDs of
// the query.
func (a *API) getCars(w http.ResponseWriter, r *http.Request) {
	a.answerCars(w, r, r.URL.Query()["cid"])
}

// postCarsStatus is POST /v1/cars/status with {"cids": [...]}: the batch
// status of up to MaxStatusCIDs CIDs, for lists too long for a URL. It
// reads and writes nothing else (POST /v1/cars is the write).
func (a *API) postCarsStatus(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r, MaxStatusBody)
	if !ok {
		return
	}
	var req struct {
		CIDs []string `json:"cids"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeErr(w, http.StatusBadRequest, `body: want {"cids": ["bagbaiera…", …]}: `+err.Error())
		return
	}
	a.answerCars(w, r, req.CIDs)
}

// answerCars answers {"cars": [...]}, one wire.CarStatus per CID asked,
// in the order asked: an unknown or malformed CID is answered in its
// entry (404, 400) and does not fail the call.
func (a *API) answerCars(w http.ResponseWriter, r *http.Request, cids []string) {
	if len(cids) == 0 || len(cids) > MaxStatusCIDs {
		writeErr(w, http.StatusBadRequest, fmt.Sprintf("send 1 to %d CIDs, not %d", MaxStatusCIDs, len(cids)))
		return
	}
	out := append(make([]byte, 0, 512*len(cids)), `{"cars":[`...)
	for i, asked := range cids {
		if i > 0 {
			out = append(out, ',')
		}
		var err error
		if out, err = a.appendStatus(r.Context(), out, asked); err != nil {
			writeErr(w, http.StatusInternalServerError, err.Error())
			return
		}
	}
	writeBody(w, http.StatusOK, append(out, "]}\n"...))
}

// appendStatus appends the wire.CarStatus of one asked CID; an error is
// the store's, which fails the call.
func (a *API) appendStatus(ctx context.Context, dst []byte, asked string) ([]byte, error) {
	asked = events.Truncate(asked, events.MaxCIDText)
	entry := wire.CarStatus{CID: asked, Status: http.StatusOK}
	car, err := events.CanonicalCID(asked)
	if err != nil {
		entry.Status, entry.Error = http.StatusBadRequest, fmt.Sprintf("not a CID: %v", err)
		return jsonw.Value(dst, entry)
	}
	start := len(dst)
	dst = append(jsonw.String(append(dst, `{"cid":`...), asked), `,"status":200,"view":`...)
	view, err := a.appendCar(ctx, dst, car)
	switch {
	case err == nil:
		return append(view, '}'), nil
	case errors.Is(err, projections.ErrNotFound):
		entry.Status, entry.Error = http.StatusNotFound, err.Error()
		return jsonw.Value(dst[:start], entry)
	}
	return nil, err
}

func (a *API) logger() *slog.Logger {
	if a.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Log
}
