package events

import (
	"encoding/json"
	"strconv"
	"time"
)

// Pin event types on the input log. A pin request and its cancellation
// are what a user asked; pin.fetching, pin.fetched and pin.failed are what
// a fetch worker learned about the pin's CID. The aggregator folds none of
// them (a fetched CAR reaches it as the car.replicated the fetch worker
// publishes); the pins read model does.
const (
	TypePinRequested = "pin.requested"
	TypePinCancelled = "pin.cancelled"
	TypePinFetching  = "pin.fetching"
	TypePinFetched   = "pin.fetched"
	TypePinFailed    = "pin.failed"
)

// PinRequested is a request to pin a CID: the Pinning Service API's Pin
// object, named by the request id ferry gave it.
type PinRequested struct {
	Header
	// RequestID names the request (the Pinning Service API's requestid).
	RequestID string `json:"requestid"`
	CID       string `json:"cid"`
	Name      string `json:"name,omitempty"`
	// Origins are multiaddrs or http(s) URLs of providers of the DAG;
	// the http(s) ones are tried first.
	Origins []string          `json:"origins,omitempty"`
	Meta    map[string]string `json:"meta,omitempty"`
	// Created is when the API accepted the request.
	Created time.Time `json:"created"`
	// Replaces names the request this one replaces (POST
	// /psa/pins/{requestid}): that one is cancelled by this one.
	Replaces string `json:"replaces,omitempty"`
	// Source is carried into the car.replicated of the fetched CAR.
	Source json.RawMessage `json:"source,omitempty"`
}

// PinCancelled withdraws a pin request (DELETE /psa/pins/{requestid}).
type PinCancelled struct {
	Header
	RequestID string    `json:"requestid"`
	At        time.Time `json:"at"`
}

// PinFetching says a fetch worker began an attempt to fetch a CID.
type PinFetching struct {
	Header
	CID string `json:"cid"`
	// Attempt counts the attempts at this CID's work item, from 1.
	Attempt int       `json:"attempt"`
	At      time.Time `json:"at"`
}

// PinFetched says a CID's DAG was fetched, verified complete and stored
// as the CAR Car; its car.replicated was published before this.
type PinFetched struct {
	Header
	CID   string `json:"cid"`
	Car   string `json:"car"`
	Size  uint64 `json:"size"`
	Piece string `json:"piece"`
	URL   string `json:"url"`
	// Source names where the DAG came from (redacted of credentials).
	Source string    `json:"source,omitempty"`
	At     time.Time `json:"at"`
}

// PinFailed says fetching a CID failed for good: Reason says why.
type PinFailed struct {
	Header
	CID    string    `json:"cid"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

func (e *PinRequested) Kind() string { return TypePinRequested }
func (e *PinCancelled) Kind() string { return TypePinCancelled }
func (e *PinFetching) Kind() string  { return TypePinFetching }
func (e *PinFetched) Kind() string   { return TypePinFetched }
func (e *PinFailed) Kind() string    { return TypePinFailed }

// A request id is unique, so it names its request and its cancellation.
func (e *PinRequested) MsgID() string { return "pin.requested/" + e.RequestID }
func (e *PinCancelled) MsgID() string { return "pin.cancelled/" + e.RequestID }

// An attempt is one fact per CID and attempt number.
func (e *PinFetching) MsgID() string {
	return "pin.fetching/" + e.CID + "/" + strconv.Itoa(e.Attempt)
}

// A CID is fetched into one CAR: a second worker finishing the same fetch
// publishes the same fact.
func (e *PinFetched) MsgID() string { return contentID("pin.fetched/"+e.CID, e.CID, e.Car) }

// A failure is one fact per CID and reason; a later request that fails
// again for the same reason, after the duplicate window, is a new fact.
func (e *PinFailed) MsgID() string { return contentID("pin.failed/"+e.CID, e.CID, e.Reason) }
