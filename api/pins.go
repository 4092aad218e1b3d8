package api

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/projections"
)

// The IPFS Pinning Service API v1.0.0 under /psa, and ipfs-cluster's
// /pins/{cid} shapes (pickup's drop-in). Both write pin.requested and
// pin.cancelled facts to the input log and answer from the pins read
// model once it has applied them.

// Bounds of GET /psa/pins, the specification's.
const (
	psaDefaultLimit = 10
	psaMaxLimit     = 1000
	psaMaxCIDs      = 10
	// MaxPinBody bounds a pin request's body.
	MaxPinBody = 64 << 10
	// pinApplyWait bounds the wait for the read model to apply a write.
	pinApplyWait = 10 * time.Second
	// ClusterPeer names ferry in the cluster shape's peer_map.
	ClusterPeer = "ferry"
)

// psaPin is the specification's Pin object.
type psaPin struct {
	CID     string            `json:"cid"`
	Name    string            `json:"name,omitempty"`
	Origins []string          `json:"origins,omitempty"`
	Meta    map[string]string `json:"meta,omitempty"`
}

// psaStatus is the specification's PinStatus object.
type psaStatus struct {
	RequestID string            `json:"requestid"`
	Status    string            `json:"status"`
	Created   string            `json:"created"`
	Pin       psaPin            `json:"pin"`
	Delegates []string          `json:"delegates"`
	Info      map[string]string `json:"info,omitempty"`
}

// psaErr answers in the specification's error shape.
func psaErr(w http.ResponseWriter, status int, reason, details string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"reason": reason, "details": details}})
}

// psaAuth is auth with the specification's error shape: every /psa and
// /pins route takes the write token.
func (a *API) psaAuth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.WriteToken != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(a.WriteToken)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="ferry"`)
				psaErr(w, http.StatusUnauthorized, "UNAUTHORIZED", "missing or wrong bearer token")
				return
			}
		}
		if a.Pins == nil {
			psaErr(w, http.StatusServiceUnavailable, "UNAVAILABLE", "pins are not served by this node")
			return
		}
		h(w, r)
	}
}

// pinRoutes adds the pin routes to mux.
func (a *API) pinRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /psa/pins", a.psaAuth(a.listPins))
	mux.HandleFunc("POST /psa/pins", a.psaAuth(a.limit(a.writes, "writes", a.addPin)))
	mux.HandleFunc("GET /psa/pins/{requestid}", a.psaAuth(a.getPin))
	mux.HandleFunc("POST /psa/pins/{requestid}", a.psaAuth(a.limit(a.writes, "writes", a.replacePin)))
	mux.HandleFunc("DELETE /psa/pins/{requestid}", a.psaAuth(a.limit(a.writes, "writes", a.removePin)))
	mux.HandleFunc("POST /pins/{cid}", a.psaAuth(a.limit(a.writes, "writes", a.clusterPin)))
	mux.HandleFunc("GET /pins/{cid}", a.psaAuth(a.clusterStatus))
}

// status is the PinStatus of p, its info naming why it failed, or its CAR
// and the CAR's state.
func (a *API) status(p projections.Pin) psaStatus {
	st := psaStatus{RequestID: p.RequestID, Status: p.Fetch.Status, Created: p.Created.UTC().Format(time.RFC3339Nano),
		Pin: psaPin{CID: p.CID, Name: p.Name, Origins: p.Origins, Meta: p.Meta}, Delegates: []string{}}
	if st.Status == "" {
		st.Status = projections.PinQueued
	}
	st.Info = a.pinInfo(p.Fetch)
	return st
}

// pinInfo is what ferry knows of a CID's fetch beyond its status, as the
// specification's info (strings only): status_details, and once pinned
// the CAR and its state in ferry (ferry status <car>).
func (a *API) pinInfo(f projections.PinFetch) map[string]string {
	info := map[string]string{}
	if f.Reason != "" {
		info["status_details"] = f.Reason
	}
	if f.Attempt > 0 {
		info["attempt"] = strconv.Itoa(f.Attempt)
	}
	if f.Car == "" {
		return info
	}
	info["car"], info["car_url"], info["piece"] = f.Car, f.URL, f.Piece
	if c, err := a.Store.Car(f.Car); err == nil {
		info["car_state"] = c.State
		if c.Aggregate != 0 {
			info["aggregate"] = strconv.FormatUint(c.Aggregate, 10)
		}
		if len(c.Deals) > 0 {
			ids := make([]string, len(c.Deals))
			for i, d := range c.Deals {
				ids[i] = d.Provider + "/" + strconv.FormatUint(d.DealID, 10)
			}
			info["deals"] = strings.Join(ids, ",")
		}
	}
	return info
}

func (a *API) listPins(w http.ResponseWriter, r *http.Request) {
	q, err := pinQuery(r)
	if err != nil {
		psaErr(w, http.StatusBadRequest, "BAD_REQUEST", err.Error())
		return
	}
	pins, count, err := a.Pins.Pins(q)
	if err != nil {
		psaErr(w, http.StatusInternalServerError, "INTERNAL_SERVER_ERROR", err.Error())
		return
	}
	results := make([]psaStatus, len(pins))
	for i, p := range pins {
		results[i] = a.status(p)
	}
	writeJSON(w, http.StatusOK, map[string]any{"count": count, "results": results})
}

// pinQuery reads the specification's filters.
func pinQuery(r *http.Request) (projections.PinQuery, error) {
	v := r.URL.Query()
	q := projections.PinQuery{Limit: psaDefaultLimit, Statuses: []string{projections.PinPinned}}
	if s := v.Get("cid"); s != "" {
		q.CIDs = strings.Split(s, ",")
		if len(q.CIDs) > psaMaxCIDs {
			return q, fmt.Errorf("cid: %d CIDs, at most %d", len(q.CIDs), psaMaxCIDs)
		}
		for i, c := range q.CIDs {
			parsed, err := events.PinCID(c)
			if err != nil {
				return q, fmt.Errorf("cid: %v", err)
			}
			q.CIDs[i] = parsed.String()
		}
	}
	q.Name, q.Match = v.Get("name"), v.Get("match")
	if len(q.Name) > 4*events.MaxPinName {
		return q, errors.New("name: too long")
	}
	switch q.Match {
	case "", "exact", "iexact", "partial", "ipartial":
	default:
		return q, fmt.Errorf("match %s: exact, iexact, partial or ipartial", events.Excerpt(q.Match))
	}
	if s := v.Get("status"); s != "" {
		q.Statuses = strings.Split(s, ",")
		for _, st := range q.Statuses {
			if !slices.Contains([]string{projections.PinQueued, projections.PinPinning, projections.PinPinned, projections.PinFailed}, st) {
				return q, fmt.Errorf("status %s: queued, pinning, pinned or failed", events.Excerpt(st))
			}
		}
	}
	for _, b := range []struct {
		name string
		t    *time.Time
	}{{"before", &q.Before}, {"after", &q.After}} {
		if s := v.Get(b.name); s != "" {
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return q, fmt.Errorf("%s: not an RFC 3339 time: %v", b.name, err)
			}
			*b.t = t
		}
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > psaMaxLimit {
			return q, fmt.Errorf("limit %s: 1 to %d", events.Excerpt(s), psaMaxLimit)
		}
		q.Limit = n
	}
	if s := v.Get("meta"); s != "" {
		if err := json.Unmarshal([]byte(s), &q.Meta); err != nil {
			return q, fmt.Errorf("meta: not a JSON object of strings: %v", err)
		}
	}
	return q, nil
}

func (a *API) getPin(w http.ResponseWriter, r *http.Request) {
	p, err := a.Pins.Pin(r.PathValue("requestid"))
	if err != nil {
		a.pinLookupErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, a.status(p))
}

func (a *API) pinLookupErr(w http.ResponseWriter, err error) {
	if errors.Is(err, projections.ErrNotFound) {
		psaErr(w, http.StatusNotFound, "NOT_FOUND", "no such pin request")
		return
	}
	psaErr(w, http.StatusInternalServerError, "INTERNAL_SERVER_ERROR", err.Error())
}

func (a *API) addPin(w http.ResponseWriter, r *http.Request) { a.request(w, r, "") }

func (a *API) replacePin(w http.ResponseWriter, r *http.Request) {
	old := r.PathValue("requestid")
	if _, err := a.Pins.Pin(old); err != nil {
		a.pinLookupErr(w, err)
		return
	}
	a.request(w, r, old)
}

// request takes a Pin from the body and records its request, replacing
// the request replaces when not empty.
func (a *API) request(w http.ResponseWriter, r *http.Request, replaces string) {
	body, ok := readBody(w, r, MaxPinBody)
	if !ok {
		return
	}
	var pin psaPin
	if err := json.Unmarshal(body, &pin); err != nil {
		psaErr(w, http.StatusBadRequest, "BAD_REQUEST", "body is not a Pin object: "+err.Error())
		return
	}
	ev := &events.PinRequested{CID: pin.CID, Name: pin.Name, Origins: pin.Origins, Meta: pin.Meta, Replaces: replaces}
	p, status, err := a.recordPin(r.Context(), ev)
	if err != nil {
		psaErr(w, status, http.StatusText(status), err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, a.status(p))
}

// recordPin validates, publishes and waits for a pin request, and returns
// it as the read model has it; on failure, the HTTP status to answer.
func (a *API) recordPin(ctx context.Context, ev *events.PinRequested) (projections.Pin, int, error) {
	if c, err := events.PinCID(ev.CID); err == nil {
		ev.CID = c.String() // one text per CID: a CIDv0 stays v0, as given
	}
	ev.RequestID, ev.Created = newRequestID(), time.Now().UTC()
	if err := ev.Validate(); err != nil {
		return projections.Pin{}, http.StatusBadRequest, err
	}
	if err := a.publishPin(ctx, ev); err != nil {
		return projections.Pin{}, http.StatusServiceUnavailable, err
	}
	p, err := a.Pins.Pin(ev.RequestID)
	if err != nil {
		return p, http.StatusInternalServerError, err
	}
	return p, 0, nil
}

// publishPin publishes a pin event and waits until the read model has
// applied it.
func (a *API) publishPin(ctx context.Context, ev events.Event) error {
	pub, err := a.Pub.Publish(ctx, ev)
	if err != nil {
		return fmt.Errorf("recording the request: %v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, pinApplyWait)
	defer cancel()
	if err := a.Pins.WaitFor(ctx, pub.Seq); err != nil {
		return fmt.Errorf("recorded at input %d, not yet applied: %v", pub.Seq, err)
	}
	return nil
}

func (a *API) removePin(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("requestid")
	if _, err := a.Pins.Pin(id); err != nil {
		a.pinLookupErr(w, err)
		return
	}
	if err := a.publishPin(r.Context(), &events.PinCancelled{RequestID: id, At: time.Now().UTC()}); err != nil {
		psaErr(w, http.StatusServiceUnavailable, "UNAVAILABLE", err.Error())
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// newRequestID is 128 random bits in hex: unguessable, and fit for a
// subject token and a msg id.
func newRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// clusterPeerInfo is one peer of ipfs-cluster's PinInfo peer_map.
type clusterPeerInfo struct {
	PeerName     string   `json:"peername"`
	IPFSPeerID   string   `json:"ipfs_peer_id"`
	IPFSAddrs    []string `json:"ipfs_peer_addresses"`
	Status       string   `json:"status"`
	Timestamp    string   `json:"timestamp"`
	Error        string   `json:"error"`
	AttemptCount int      `json:"attempt_count"`
	PriorityPin  bool     `json:"priority_pin"`
}

// clusterInfo is ipfs-cluster's PinInfo (GlobalPinInfo) shape.
type clusterInfo struct {
	CID         string                     `json:"cid"`
	Name        string                     `json:"name"`
	Allocations []string                   `json:"allocations"`
	Origins     []string                   `json:"origins"`
	Created     string                     `json:"created"`
	Metadata    map[string]string          `json:"metadata"`
	PeerMap     map[string]clusterPeerInfo `json:"peer_map"`
}

// clusterStatuses maps pin statuses to ipfs-cluster's tracker statuses.
var clusterStatuses = map[string]string{
	projections.PinQueued: "pin_queued", projections.PinPinning: "pinning",
	projections.PinPinned: "pinned", projections.PinFailed: "pin_error",
}

// clusterPin takes ipfs-cluster's POST /pins/{cid}: a CID is pinned once,
// so a CID with a live request is answered with it, not asked again.
// Query parameters name and origins (comma-separated) are ipfs-cluster's.
func (a *API) clusterPin(w http.ResponseWriter, r *http.Request) {
	c, err := events.PinCID(r.PathValue("cid"))
	if err != nil {
		psaErr(w, http.StatusBadRequest, "BAD_REQUEST", err.Error())
		return
	}
	pins, _, err := a.Pins.PinsOf(c.String())
	if err != nil {
		psaErr(w, http.StatusInternalServerError, "INTERNAL_SERVER_ERROR", err.Error())
		return
	}
	if len(pins) == 0 {
		ev := &events.PinRequested{CID: c.String(), Name: r.URL.Query().Get("name")}
		if o := r.URL.Query().Get("origins"); o != "" {
			ev.Origins = strings.Split(o, ",")
		}
		if _, status, err := a.recordPin(r.Context(), ev); err != nil {
			psaErr(w, status, http.StatusText(status), err.Error())
			return
		}
	}
	a.clusterStatus(w, r)
}

func (a *API) clusterStatus(w http.ResponseWriter, r *http.Request) {
	c, err := events.PinCID(r.PathValue("cid"))
	if err != nil {
		psaErr(w, http.StatusBadRequest, "BAD_REQUEST", err.Error())
		return
	}
	pins, f, err := a.Pins.PinsOf(c.String())
	if err != nil {
		psaErr(w, http.StatusInternalServerError, "INTERNAL_SERVER_ERROR", err.Error())
		return
	}
	if len(pins) == 0 {
		psaErr(w, http.StatusNotFound, "NOT_FOUND", "this CID is not pinned here")
		return
	}
	p := pins[0]
	meta := map[string]string{}
	for k, v := range a.pinInfo(f) {
		if k != "status_details" && k != "attempt" {
			meta[k] = v
		}
	}
	origins := p.Origins
	if origins == nil {
		origins = []string{}
	}
	status := f.Status
	if status == "" {
		status = projections.PinQueued
	}
	at := f.At
	if at.IsZero() {
		at = p.Created
	}
	writeJSON(w, http.StatusOK, clusterInfo{
		CID: p.CID, Name: p.Name, Allocations: []string{}, Origins: origins,
		Created: p.Created.Format(time.RFC3339Nano), Metadata: meta,
		PeerMap: map[string]clusterPeerInfo{ClusterPeer: {
			PeerName: ClusterPeer, IPFSAddrs: []string{}, Status: clusterStatuses[status],
			Timestamp: at.UTC().Format(time.RFC3339Nano), Error: f.Reason, AttemptCount: f.Attempt,
		}},
	})
}
