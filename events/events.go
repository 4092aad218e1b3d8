package events

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ferry-dev/ferry/internal/jsonw"
)

// Event types on the input log.
const (
	TypeCarReplicated  = "car.replicated"
	TypeCarPiece       = "car.piece"
	TypeCarInvalid     = "car.invalid"
	TypeTick           = "tick"
	TypeAggregateClose = "aggregate.close"
	TypeDealOffered    = "deal.offered"
	TypeOfferFailed    = "deal.offer_failed"
	TypeDealReport     = "deal.report"
	TypeAggReoffer     = "aggregate.reoffer"
	TypeAggFail        = "aggregate.fail"
	TypeSettingsChange = "settings.change"
)

// Version is the only wire version so far.
const Version = 1

// ErrUnknownType is returned by Decode for a type it does not know.
var ErrUnknownType = errors.New("unknown event type")

// Event is one input fact.
type Event interface {
	// Kind is the event's "type".
	Kind() string
	// MsgID is the Nats-Msg-Id derived from the fact.
	MsgID() string
}

// Header is the part every event carries.
type Header struct {
	Type    string `json:"type"`
	Version int    `json:"version"`
}

// CarReplicated says a CAR is stored in public storage and can be fetched
// from its URLs. It is the event producers publish.
type CarReplicated struct {
	Header
	Car          string          `json:"car"`
	Size         uint64          `json:"size"`
	MD5          string          `json:"md5"`
	URLs         []string        `json:"urls"`
	Piece        string          `json:"piece,omitempty"`
	PieceSize    uint64          `json:"pieceSize,omitempty"`
	ReplicatedAt string          `json:"replicatedAt,omitempty"`
	Source       json.RawMessage `json:"source,omitempty"`
}

// CarPiece says a piece worker computed the piece CID of a CAR.
type CarPiece struct {
	Header
	Car       string `json:"car"`
	Piece     string `json:"piece"`
	PieceSize uint64 `json:"pieceSize,omitempty"`
}

// CarInvalid says a piece worker found a CAR's bytes bad.
type CarInvalid struct {
	Header
	Car    string `json:"car"`
	Reason string `json:"reason"`
}

// Tick carries the time into the fold; nothing else does.
type Tick struct {
	Header
	Time time.Time `json:"time"`
}

// AggregateClose is an operator's order to close an INGESTING aggregate now.
type AggregateClose struct {
	Header
	Aggregate uint64 `json:"aggregate"`
	// By names who asked, for the record.
	By string `json:"by,omitempty"`
}

// AggregateReoffer is an operator's order to offer a READY, DEAL_PENDING
// or given-up DEAL_FAILED aggregate again now.
type AggregateReoffer struct {
	Header
	Aggregate uint64 `json:"aggregate"`
	// By names who asked and when, for the record; it also tells one
	// order from a repeat of another.
	By string `json:"by,omitempty"`
}

// AggregateFail is an operator's order to treat the deal of a READY or
// DEAL_PENDING aggregate as failed, as a failed report would.
type AggregateFail struct {
	Header
	Aggregate uint64 `json:"aggregate"`
	Reason    string `json:"reason,omitempty"`
	By        string `json:"by,omitempty"`
}

// SettingsChange is an operator's order to fold the inputs after it under
// another aggregation policy. Fields left out keep their value; GroupBy
// "none" ends grouping. The fold records the settings that result as a
// log.settings decision, or ignores the order with the reason.
type SettingsChange struct {
	Header
	MinPayload   *uint64        `json:"minPayload,omitempty"`
	MaxWait      *time.Duration `json:"maxWait,omitempty"`
	GroupBy      *string        `json:"groupBy,omitempty"`
	GroupMaxWait *time.Duration `json:"groupMaxWait,omitempty"`
	// By names who asked and when, for the record; it also tells one
	// order from a repeat of another.
	By string `json:"by,omitempty"`
}

// Apply returns cfg changed as e orders, or why it cannot be.
func (e *SettingsChange) Apply(cfg Settings) (Settings, error) {
	if e.MinPayload == nil && e.MaxWait == nil && e.GroupBy == nil && e.GroupMaxWait == nil {
		return cfg, errors.New("settings.change: changes nothing (give minPayload, maxWait, groupBy or groupMaxWait)")
	}
	if e.MinPayload != nil {
		if *e.MinPayload > cfg.DealSize {
			return cfg, fmt.Errorf("settings.change: minPayload %d is more than a %d-byte deal holds", *e.MinPayload, cfg.DealSize)
		}
		cfg.MinPayload = *e.MinPayload
	}
	if e.MaxWait != nil {
		if *e.MaxWait < 0 {
			return cfg, fmt.Errorf("settings.change: maxWait %s is negative", *e.MaxWait)
		}
		cfg.MaxWait = *e.MaxWait
	}
	if e.GroupBy != nil {
		g, err := ParseGroupBy(*e.GroupBy)
		if err != nil {
			return cfg, fmt.Errorf("settings.change: %w", err)
		}
		cfg.GroupBy = g
	}
	if e.GroupMaxWait != nil {
		if *e.GroupMaxWait < 0 {
			return cfg, fmt.Errorf("settings.change: groupMaxWait %s is negative", *e.GroupMaxWait)
		}
		cfg.GroupMaxWait = *e.GroupMaxWait
	}
	return cfg, nil
}

// DealOffered says the deal engine accepted the offer of an aggregate.
type DealOffered struct {
	Header
	Aggregate uint64 `json:"aggregate"`
	Piece     string `json:"piece"`
	Engine    string `json:"engine,omitempty"`
	// Offer counts the offers of the aggregate the engine accepted,
	// this one included, so that an offer made again (after a deal
	// timeout or an operator's order) is not taken for a retried publish
	// of the one before. Absent means 1.
	Offer int `json:"offer,omitempty"`
}

// OfferFailed says offering an aggregate failed for good (after retries).
type OfferFailed struct {
	Header
	Aggregate uint64 `json:"aggregate"`
	Reason    string `json:"reason"`
	// Status is the HTTP status of the engine's last answer, absent when
	// it did not answer (a network error, a timeout).
	Status int `json:"status,omitempty"`
	// RetryAt is when the dealer offers the aggregate again, absent when
	// it does not (the engine refused the offer).
	RetryAt time.Time `json:"retryAt,omitzero"`
}

// Deal is one storage deal made for an aggregate.
type Deal struct {
	Provider        string `json:"provider"`
	DealID          uint64 `json:"dealId"`
	ExpirationEpoch int64  `json:"expirationEpoch,omitempty"`
}

// Report statuses.
const (
	StatusPublished = "published"
	StatusActive    = "active"
	StatusFailed    = "failed"
)

// DealReport is deal news from the deal engine or the oracle.
type DealReport struct {
	Header
	// Aggregate is the aggregate's piece CID (v1 or v2) or its numeric id.
	Aggregate string `json:"aggregate"`
	Status    string `json:"status"`
	Deals     []Deal `json:"deals,omitempty"`
	Reason    string `json:"reason,omitempty"`
	// AggregateID is the numeric id ferry resolved Aggregate to when the
	// report came in. A piece can be offered again after a failure (the
	// same CARs in the same layout), so the id tells a second failure of
	// that piece from a retried publish of the first.
	AggregateID uint64 `json:"aggregateId,omitempty"`
}

func (e *CarReplicated) Kind() string    { return TypeCarReplicated }
func (e *CarPiece) Kind() string         { return TypeCarPiece }
func (e *CarInvalid) Kind() string       { return TypeCarInvalid }
func (e *Tick) Kind() string             { return TypeTick }
func (e *AggregateClose) Kind() string   { return TypeAggregateClose }
func (e *DealOffered) Kind() string      { return TypeDealOffered }
func (e *OfferFailed) Kind() string      { return TypeOfferFailed }
func (e *DealReport) Kind() string       { return TypeDealReport }
func (e *AggregateReoffer) Kind() string { return TypeAggReoffer }
func (e *AggregateFail) Kind() string    { return TypeAggFail }
func (e *SettingsChange) Kind() string   { return TypeSettingsChange }

// MsgID of a car.replicated names the CAR and a digest of everything the
// event says about it: a retried publish of the same event is one message,
// while a corrected event (or a conflicting copy) is a message of its own,
// decided by the fold, however soon it follows.
func (e *CarReplicated) MsgID() string {
	h := sha256.New()
	field := func(s string) {
		var n [binary.MaxVarintLen64]byte
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(s)))])
		h.Write([]byte(s))
	}
	field(e.Car)
	field(strconv.FormatUint(e.Size, 10))
	field(e.MD5)
	field(strconv.Itoa(len(e.URLs)))
	for _, u := range e.URLs {
		field(u)
	}
	field(e.Piece)
	field(strconv.FormatUint(e.PieceSize, 10))
	field(e.ReplicatedAt)
	source := e.Source
	if len(source) > 0 {
		// As Encode stores it (compacted, escaped), so that an event and
		// its stored copy have one id.
		if enc, err := json.Marshal(e.Source); err == nil {
			source = enc
		}
	}
	field(string(source))
	var sum [sha256.Size]byte
	return "car.replicated/" + Truncate(e.Car, MaxCIDText) + "/" + hex.EncodeToString(h.Sum(sum[:0])[:16])
}

// The ids below digest every field the fold reads (contentID), so a
// corrected or extended fact is a new message however long it is, and a
// retry of the same fact is a duplicate.
func (e *CarPiece) MsgID() string {
	return contentID("car.piece/"+e.Car, e.Car, e.Piece, strconv.FormatUint(e.PieceSize, 10))
}
func (e *CarInvalid) MsgID() string { return contentID("car.invalid/"+e.Car, e.Car, e.Reason) }
func (e *Tick) MsgID() string       { return "tick/" + e.Time.UTC().Format(time.RFC3339Nano) }
func (e *AggregateClose) MsgID() string {
	id := strconv.FormatUint(e.Aggregate, 10)
	return contentID("aggregate.close/"+id, id, e.By)
}
func (e *AggregateReoffer) MsgID() string {
	return fmt.Sprintf("aggregate.reoffer/%d/%s", e.Aggregate, e.By)
}
func (e *AggregateFail) MsgID() string {
	return fmt.Sprintf("aggregate.fail/%d/%s", e.Aggregate, e.By)
}
func (e *SettingsChange) MsgID() string {
	enc, _ := json.Marshal(struct {
		MinPayload   *uint64        `json:"minPayload,omitempty"`
		MaxWait      *time.Duration `json:"maxWait,omitempty"`
		GroupBy      *string        `json:"groupBy,omitempty"`
		GroupMaxWait *time.Duration `json:"groupMaxWait,omitempty"`
	}{e.MinPayload, e.MaxWait, e.GroupBy, e.GroupMaxWait})
	return contentID("settings.change", string(enc), e.By)
}
func (e *DealOffered) MsgID() string {
	if e.Offer > 1 {
		return fmt.Sprintf("deal.offered/%d/%d", e.Aggregate, e.Offer)
	}
	return fmt.Sprintf("deal.offered/%d", e.Aggregate)
}
func (e *OfferFailed) MsgID() string {
	id := strconv.FormatUint(e.Aggregate, 10)
	return contentID("deal.offer_failed/"+id, id, e.Reason)
}

// MsgID names the aggregate by the id the HTTP API resolved it to, when it
// did, so a report naming it by v1 or v2 piece CID is one fact; then the
// status, and the deals (provider and deal id: what the fold dedupes by)
// or the failure's reason.
func (e *DealReport) MsgID() string {
	ref := e.Aggregate
	if e.AggregateID != 0 {
		ref = strconv.FormatUint(e.AggregateID, 10)
	}
	parts := make([]string, 0, 2+2*len(e.Deals))
	parts = append(parts, ref, e.Status)
	if e.Status == StatusFailed {
		parts = append(parts, e.Reason)
	} else {
		for _, d := range e.Deals {
			parts = append(parts, d.Provider, strconv.FormatUint(d.DealID, 10))
		}
	}
	return contentID("deal.report/"+ref+"/"+e.Status, parts...)
}

// New returns an empty event of the given type, or nil.
func New(typ string) Event {
	switch typ {
	case TypeCarReplicated:
		return &CarReplicated{}
	case TypeCarPiece:
		return &CarPiece{}
	case TypeCarInvalid:
		return &CarInvalid{}
	case TypeTick:
		return &Tick{}
	case TypeAggregateClose:
		return &AggregateClose{}
	case TypeDealOffered:
		return &DealOffered{}
	case TypeOfferFailed:
		return &OfferFailed{}
	case TypeDealReport:
		return &DealReport{}
	case TypeAggReoffer:
		return &AggregateReoffer{}
	case TypeSettingsChange:
		return &SettingsChange{}
	case TypeAggFail:
		return &AggregateFail{}
	case TypePinRequested:
		return &PinRequested{}
	case TypePinCancelled:
		return &PinCancelled{}
	case TypePinFetching:
		return &PinFetching{}
	case TypePinFetched:
		return &PinFetched{}
	case TypePinFailed:
		return &PinFailed{}
	}
	return nil
}

// Decode parses one event. An unknown type gives ErrUnknownType; a known
// type with a version other than 1, or with fields of the wrong JSON type,
// gives a descriptive error. The "type" field is the source of truth: the
// subject a message came on does not change how it is read.
func Decode(data []byte) (Event, error) {
	// The hot car.replicated (and car.piece) in the usual form is read
	// without reflection; all else, errors included, by encoding/json.
	if ev, ok := decodeFast(data); ok {
		return ev, nil
	}
	return decodeJSON(data)
}

// Encode sets the header of ev and marshals it.
func Encode(ev Event) ([]byte, error) {
	setHeader(ev)
	if e, ok := ev.(*CarReplicated); ok {
		// The event producers publish by the million: written by hand
		// (held equal to json.Marshal by a test); anything it does not
		// take is json.Marshal's, error included.
		if data, err := appendCarReplicated(make([]byte, 0, carReplicatedSize(e)), e); err == nil {
			return data, nil
		}
	}
	return json.Marshal(ev)
}

// carReplicatedSize is what appendCarReplicated writes for e when no
// string needs escaping.
func carReplicatedSize(e *CarReplicated) int {
	n := 160 + len(e.Type) + len(e.Car) + len(e.MD5) + len(e.Piece) + len(e.ReplicatedAt) + len(e.Source)
	for _, u := range e.URLs {
		n += 3 + len(u)
	}
	return n
}

// appendCarReplicated appends json.Marshal(e)'s bytes.
func appendCarReplicated(dst []byte, e *CarReplicated) ([]byte, error) {
	dst = append(dst, `{"type":`...)
	dst = jsonw.String(dst, e.Type)
	dst = append(dst, `,"version":`...)
	dst = strconv.AppendInt(dst, int64(e.Version), 10)
	dst = append(dst, `,"car":`...)
	dst = jsonw.String(dst, e.Car)
	dst = append(dst, `,"size":`...)
	dst = strconv.AppendUint(dst, e.Size, 10)
	dst = append(dst, `,"md5":`...)
	dst = jsonw.String(dst, e.MD5)
	dst = jsonw.Strings(append(dst, `,"urls":`...), e.URLs)
	if e.Piece != "" {
		dst = jsonw.String(append(dst, `,"piece":`...), e.Piece)
	}
	if e.PieceSize != 0 {
		dst = strconv.AppendUint(append(dst, `,"pieceSize":`...), e.PieceSize, 10)
	}
	if e.ReplicatedAt != "" {
		dst = jsonw.String(append(dst, `,"replicatedAt":`...), e.ReplicatedAt)
	}
	if len(e.Source) != 0 {
		var err error
		if dst, err = jsonw.Raw(append(dst, `,"source":`...), e.Source); err != nil {
			return nil, err
		}
	}
	return append(dst, '}'), nil
}

func setHeader(ev Event) {
	h := Header{Type: ev.Kind(), Version: Version}
	switch e := ev.(type) {
	case *CarReplicated:
		e.Header = h
	case *CarPiece:
		e.Header = h
	case *CarInvalid:
		e.Header = h
	case *Tick:
		e.Header = h
	case *AggregateClose:
		e.Header = h
	case *DealOffered:
		e.Header = h
	case *OfferFailed:
		e.Header = h
	case *DealReport:
		e.Header = h
	case *AggregateReoffer:
		e.Header = h
	case *AggregateFail:
		e.Header = h
	case *SettingsChange:
		e.Header = h
	case *PinRequested:
		e.Header = h
	case *PinCancelled:
		e.Header = h
	case *PinFetching:
		e.Header = h
	case *PinFetched:
		e.Header = h
	case *PinFailed:
		e.Header = h
	}
}
