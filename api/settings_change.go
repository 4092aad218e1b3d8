package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/piece"
	"github.com/ferry-dev/ferry/wire"
)

// postSettings is POST /v1/settings: publish a settings.change, which the
// fold applies from its input on (and records as a log.settings
// decision). It is checked here against the settings the log is folded
// under now, for a clear 400; the fold decides in the end, against the
// settings of its input's turn. 202 names the input's sequence and the
// settings it makes.
func (a *API) postSettings(w http.ResponseWriter, r *http.Request) {
	data, ok := readBody(w, r, MaxOrderBody)
	if !ok {
		return
	}
	var body wire.SettingsChange
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		writeErr(w, http.StatusBadRequest, `body: want {"minPayload": N, "maxWait": "4h", "groupBy": "source.space"|"none", "groupMaxWait": "24h", "by": "…"}: `+err.Error())
		return
	}
	by := byHTTP()
	if body.By != "" {
		by = body.By + " via " + by
	}
	change := &events.SettingsChange{MinPayload: body.MinPayload, MaxWait: body.MaxWait.Ptr(), GroupBy: body.GroupBy,
		GroupMaxWait: body.GroupMaxWait.Ptr(), By: by}
	if a.Policy == nil {
		writeErr(w, http.StatusServiceUnavailable, "this server does not know the log's settings")
		return
	}
	now, err := a.Policy(r.Context())
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, "the log's settings: "+err.Error())
		return
	}
	next, err := change.Apply(now)
	if err == nil && next.MinPayload > piece.Unpadded(next.DealSize) {
		// What serve's --min-payload refuses: max-wait would never close
		// an aggregate.
		err = fmt.Errorf("settings.change: minPayload %d is more than a %d-byte deal holds (%d bytes)", next.MinPayload, next.DealSize, piece.Unpadded(next.DealSize))
	}
	if err == nil && next == now {
		err = fmt.Errorf("settings.change: the settings are already %s", now)
	}
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	pub, err := a.Pub.Publish(r.Context(), change)
	if err != nil {
		writeErr(w, publishStatus(jetlog.IsStorageFull(err)), err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, wire.SettingsChanged{Status: "settings change requested", Seq: pub.Seq, Settings: next, By: by})
}
