package events

import (
	"encoding/json"
	"fmt"

	"github.com/ferry-dev/ferry/internal/jsonscan"
)

// decodeJSON is Decode by encoding/json: the header, then the typed event.
// It is the reference the fast path is held to, and where it falls back.
func decodeJSON(data []byte) (Event, error) {
	var h Header
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, fmt.Errorf("not a JSON event object: %v", err)
	}
	ev := New(h.Type)
	if ev == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownType, h.Type)
	}
	if h.Version != Version {
		return nil, fmt.Errorf("%s: unsupported version %d (want %d)", h.Type, h.Version, Version)
	}
	if err := json.Unmarshal(data, ev); err != nil {
		return nil, fmt.Errorf("%s: %v", h.Type, err)
	}
	return ev, nil
}

// Key bits of decodeFast: a repeated key is refused (json.Unmarshal would
// merge the values).
const (
	fkType uint = 1 << iota
	fkVersion
	fkCar
	fkSize
	fkMD5
	fkURLs
	fkPiece
	fkPieceSize
	fkReplicatedAt
	fkSource

	// fkCarPiece are the keys a car.piece takes on the fast path.
	fkCarPiece = fkType | fkVersion | fkCar | fkPiece | fkPieceSize
)

// decodeFast reads a car.replicated or car.piece of version 1 and reports
// true if data is in the form it reads; the event is then exactly what
// decodeJSON makes of data. On false the caller falls back to decodeJSON
// (errors, other types and versions always come from there).
//
// The form: a JSON object with whitespace anywhere between tokens; the
// keys of the type's fields exactly as its JSON tags spell them, in any
// order, each at most once (a car.piece with none of car.replicated's
// other keys); type and keys as plain strings; other strings valid JSON
// (one with escapes or invalid UTF-8 is read by json.Unmarshal alone);
// numbers as plain decimal digits that fit the field; null where
// json.Unmarshal leaves the field zero. source may be any JSON value
// nested at most jsonscan.MaxDepth deep and keeps its bytes as they are.
func decodeFast(data []byte) (Event, bool) {
	d := jsonscan.New(data)
	// One allocation holds the event and the backing of a one-URL list.
	rb := new(struct {
		e    CarReplicated
		urls [1]string
	})
	e := &rb.e
	var (
		typ     string
		version int
	)
	seen, ok := d.Object(func(key []byte) (bit uint, ok bool) {
		switch string(key) {
		case "type":
			bit, ok = fkType, eventType(&d, &typ)
		case "version":
			bit, ok = fkVersion, d.Int(&version)
			ok = ok && version == Version
		case "car":
			bit, ok = fkCar, d.Str(&e.Car)
		case "size":
			bit, ok = fkSize, d.Uint64(&e.Size)
		case "md5":
			bit, ok = fkMD5, d.Str(&e.MD5)
		case "urls":
			bit, ok = fkURLs, d.Strs(&e.URLs, rb.urls[:0])
		case "piece":
			bit, ok = fkPiece, d.Str(&e.Piece)
		case "pieceSize":
			bit, ok = fkPieceSize, d.Uint64(&e.PieceSize)
		case "replicatedAt":
			bit, ok = fkReplicatedAt, d.Str(&e.ReplicatedAt)
		case "source":
			bit, ok = fkSource, d.Raw(&e.Source)
		}
		return bit, ok
	})
	if !ok || !d.End() || seen&fkVersion == 0 {
		return nil, false
	}
	switch typ {
	case TypeCarReplicated:
		e.Header = Header{Type: TypeCarReplicated, Version: Version}
		return e, true
	case TypeCarPiece:
		if seen&^fkCarPiece != 0 {
			return nil, false
		}
		return &CarPiece{Header: Header{Type: TypeCarPiece, Version: Version},
			Car: e.Car, Piece: e.Piece, PieceSize: e.PieceSize}, true
	}
	return nil, false // no type
}

// eventType reads the type of an event the fast path reads, sharing the
// constant's storage; any other type gives false.
func eventType(d *jsonscan.Scanner, s *string) bool {
	v, ok := d.StrBytes()
	switch {
	case !ok:
		return false
	case string(v) == TypeCarReplicated:
		*s = TypeCarReplicated
	case string(v) == TypeCarPiece:
		*s = TypeCarPiece
	default:
		return false
	}
	return true
}
