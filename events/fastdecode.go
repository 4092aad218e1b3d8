package events

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"unicode/utf8"
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
// nested at most maxRawDepth deep and keeps its bytes as they are.
func decodeFast(data []byte) (Event, bool) {
	d := scanner{data: data}
	if d.next() != '{' {
		return nil, false
	}
	// One allocation holds the event and the backing of a one-URL list.
	rb := new(struct {
		e    CarReplicated
		urls [1]string
	})
	e := &rb.e
	var (
		typ     string
		version int
		seen    uint
	)
	if d.peek() == '}' {
		d.pos++
	} else {
		for {
			var bit uint
			ok := false
			switch string(d.key()) {
			case "type":
				bit, ok = fkType, d.eventType(&typ)
			case "version":
				bit, ok = fkVersion, d.int(&version)
				ok = ok && version == Version
			case "car":
				bit, ok = fkCar, d.str(&e.Car)
			case "size":
				bit, ok = fkSize, d.u64(&e.Size)
			case "md5":
				bit, ok = fkMD5, d.str(&e.MD5)
			case "urls":
				bit, ok = fkURLs, d.strs(&e.URLs, rb.urls[:0])
			case "piece":
				bit, ok = fkPiece, d.str(&e.Piece)
			case "pieceSize":
				bit, ok = fkPieceSize, d.u64(&e.PieceSize)
			case "replicatedAt":
				bit, ok = fkReplicatedAt, d.str(&e.ReplicatedAt)
			case "source":
				bit, ok = fkSource, d.raw(&e.Source)
			}
			if !ok || seen&bit != 0 {
				return nil, false
			}
			seen |= bit
			if c := d.next(); c == '}' {
				break
			} else if c != ',' {
				return nil, false
			}
		}
	}
	if d.ws(); d.pos != len(data) || seen&fkVersion == 0 {
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
func (d *scanner) eventType(s *string) bool {
	v, ok := d.strBytes()
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

// maxRawDepth bounds the nesting of a source value the fast path skips.
const maxRawDepth = 64

// scanner reads JSON data from pos on. Each method reports whether what
// it met is in the fast path's form; on false the caller gives up. Every
// read steps over the whitespace before its token.
type scanner struct {
	data []byte
	pos  int
}

// ws steps over JSON whitespace.
func (d *scanner) ws() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// next returns the next byte after whitespace and steps over it, or 0 at
// the end (0 is never valid outside a string).
func (d *scanner) next() byte {
	c := d.peek()
	if c != 0 {
		d.pos++
	}
	return c
}

// peek returns the next byte after whitespace, or 0 at the end.
func (d *scanner) peek() byte {
	d.ws()
	if d.pos >= len(d.data) {
		return 0
	}
	return d.data[d.pos]
}

// literal steps over lit if it is next.
func (d *scanner) literal(lit string) bool {
	d.ws()
	if len(d.data)-d.pos >= len(lit) && string(d.data[d.pos:d.pos+len(lit)]) == lit {
		d.pos += len(lit)
		return true
	}
	return false
}

func (d *scanner) null() bool { return d.literal("null") }

// key reads an object key and its colon; it returns the key's bytes (nil
// when not in the form: escapes or control characters).
func (d *scanner) key() []byte {
	if d.next() != '"' {
		return nil
	}
	start := d.pos
	for i := start; i < len(d.data); i++ {
		c := d.data[i]
		if c == '"' {
			d.pos = i + 1
			if d.next() != ':' {
				return nil
			}
			return d.data[start:i]
		}
		if c == '\\' || c < 0x20 {
			return nil
		}
	}
	return nil
}

// strBytes reads a string without escapes or control characters in valid
// UTF-8 and returns its content.
func (d *scanner) strBytes() ([]byte, bool) {
	if d.next() != '"' {
		return nil, false
	}
	n := bytes.IndexByte(d.data[d.pos:], '"')
	if n < 0 {
		return nil, false
	}
	s := d.data[d.pos : d.pos+n]
	if !plainASCII(s) {
		// An escaped quote ends s early, but then s has a backslash.
		for _, c := range s {
			if c == '\\' || c < 0x20 {
				return nil, false
			}
		}
		if !utf8.Valid(s) {
			return nil, false // json.Unmarshal replaces bad bytes
		}
	}
	d.pos += n + 1
	return s, true
}

// plainASCII reports whether s has only bytes from 0x20 to 0x7f but the
// backslash, eight at a time.
func plainASCII(s []byte) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	var bad uint64
	for len(s) >= 8 {
		w := binary.LittleEndian.Uint64(s)
		v := w ^ (ones * '\\')
		// A byte of w below 0x20, a zero byte of v, or a high bit of w.
		bad |= (w-ones*0x20)&^w | (v-ones)&^v | w
		s = s[8:]
	}
	for _, c := range s {
		if c < 0x20 || c == '\\' || c >= 0x80 {
			return false
		}
	}
	return bad&highs == 0
}

// str reads a string field: null leaves it "". A string with escapes or
// bytes that are not UTF-8 (a URL's \u0026 as encoding/json writes it) is
// handed alone to json.Unmarshal, which then reads it as it would in the
// event.
func (d *scanner) str(s *string) bool {
	if d.null() {
		return true
	}
	start := d.pos
	if v, ok := d.strBytes(); ok {
		*s = string(v)
		return true
	}
	d.pos = start
	if d.peek() != '"' || !d.skipString() {
		return false
	}
	return json.Unmarshal(d.data[start:d.pos], s) == nil
}

// uint reads an unsigned field of at most max: null leaves it 0.
func (d *scanner) uint(max uint64) (uint64, bool) {
	if d.null() {
		return 0, true
	}
	start := d.pos
	var n uint64
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		if c < '0' || c > '9' {
			break
		}
		digit := uint64(c - '0')
		if n > (max-digit)/10 {
			return 0, false
		}
		n = n*10 + digit
		d.pos++
	}
	switch {
	case d.pos == start:
		return 0, false // not a number, or a sign
	case d.data[start] == '0' && d.pos-start > 1:
		return 0, false // leading zero: invalid JSON
	}
	// A fraction or exponent shows as the next byte not being , or }.
	return n, true
}

func (d *scanner) u64(v *uint64) bool {
	n, ok := d.uint(math.MaxUint64)
	*v = n
	return ok
}

func (d *scanner) int(v *int) bool {
	n, ok := d.uint(math.MaxInt)
	*v = int(n)
	return ok
}

// strs reads a list of strings, appending to out (empty, with room for
// the usual one).
func (d *scanner) strs(ss *[]string, out []string) bool {
	if d.null() {
		return true
	}
	if d.next() != '[' {
		return false
	}
	if d.peek() == ']' {
		d.pos++
		*ss = []string{} // json.Unmarshal makes an empty, non-nil slice
		return true
	}
	for {
		out = append(out, "")
		if !d.str(&out[len(out)-1]) {
			return false
		}
		switch d.next() {
		case ',':
		case ']':
			*ss = out
			return true
		default:
			return false
		}
	}
}

// raw reads any JSON value and stores a copy of its bytes from its first
// to its last byte, as json.RawMessage.UnmarshalJSON does (null included).
func (d *scanner) raw(m *json.RawMessage) bool {
	d.ws()
	start := d.pos
	if !d.skip(0) {
		return false
	}
	*m = append(json.RawMessage(nil), d.data[start:d.pos]...)
	return true
}

// skip steps over one valid JSON value.
func (d *scanner) skip(depth int) bool {
	switch c := d.peek(); {
	case c == '{':
		if depth >= maxRawDepth {
			return false
		}
		d.pos++
		if d.peek() == '}' {
			d.pos++
			return true
		}
		for {
			if d.peek() != '"' || !d.skipString() || d.next() != ':' || !d.skip(depth+1) {
				return false
			}
			switch d.next() {
			case ',':
			case '}':
				return true
			default:
				return false
			}
		}
	case c == '[':
		if depth >= maxRawDepth {
			return false
		}
		d.pos++
		if d.peek() == ']' {
			d.pos++
			return true
		}
		for {
			if !d.skip(depth + 1) {
				return false
			}
			switch d.next() {
			case ',':
			case ']':
				return true
			default:
				return false
			}
		}
	case c == '"':
		return d.skipString()
	case c == '-' || c >= '0' && c <= '9':
		return d.skipNumber()
	case c == 'n':
		return d.literal("null")
	case c == 't':
		return d.literal("true")
	case c == 'f':
		return d.literal("false")
	}
	return false
}

// skipString steps over a valid JSON string, escapes included; like
// encoding/json's validity check it lets invalid UTF-8 pass.
func (d *scanner) skipString() bool {
	d.pos++ // '"'
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		d.pos++
		switch {
		case c == '"':
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if d.pos >= len(d.data) {
				return false
			}
			c = d.data[d.pos]
			d.pos++
			switch c {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				for range 4 {
					if d.pos >= len(d.data) {
						return false
					}
					h := d.data[d.pos]
					d.pos++
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return false
					}
				}
			default:
				return false
			}
		}
	}
	return false
}

// skipNumber steps over a valid JSON number.
func (d *scanner) skipNumber() bool {
	digits := func() bool {
		start := d.pos
		for d.pos < len(d.data) && d.data[d.pos] >= '0' && d.data[d.pos] <= '9' {
			d.pos++
		}
		return d.pos > start
	}
	if d.data[d.pos] == '-' {
		d.pos++
	}
	switch {
	case d.pos < len(d.data) && d.data[d.pos] == '0':
		d.pos++
	case !digits():
		return false
	}
	if d.pos < len(d.data) && d.data[d.pos] == '.' {
		d.pos++
		if !digits() {
			return false
		}
	}
	if d.pos < len(d.data) && (d.data[d.pos] == 'e' || d.data[d.pos] == 'E') {
		d.pos++
		if d.pos < len(d.data) && (d.data[d.pos] == '+' || d.data[d.pos] == '-') {
			d.pos++
		}
		if !digits() {
			return false
		}
	}
	return true
}
