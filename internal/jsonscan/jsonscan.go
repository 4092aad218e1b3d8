// Package jsonscan is the one hand-written JSON scanner behind ferry's
// decode fast paths (events.Decode for the input log, events.DecodeBatch
// for the aggregate log). Its one job is reading, token by token, the JSON
// that those paths expect, without reflection and with few allocations.
//
// Its contract: it is a fast path that only accepts what it fully
// understands. Every method reports whether what it met is in that form
// and, when it reports true, has stored exactly what json.Unmarshal would
// store for the same bytes. Anything else (escapes where they are not
// handled, numbers that do not fit, nesting too deep, invalid JSON, ...)
// gives false, and the caller then gives up on the whole input and falls
// back to encoding/json, so results and errors always stay equal to
// encoding/json's. A method that reports false may have moved the scanner
// and written partial results: callers discard both.
//
// Whitespace as JSON defines it may stand between any two tokens; each
// read steps over the whitespace before its token.
package jsonscan

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"time"
	"unicode/utf8"
)

// MaxDepth bounds the nesting of a value Skip and Raw step over; deeper
// values give false (encoding/json then reads them).
const MaxDepth = 64

// Scanner reads JSON data from its position on. The zero value reads
// nothing; make one with New.
type Scanner struct {
	data []byte
	pos  int
}

// New returns a Scanner at the start of data.
func New(data []byte) Scanner { return Scanner{data: data} }

// ws steps over JSON whitespace.
func (d *Scanner) ws() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// End steps over whitespace and reports whether the data ends there.
func (d *Scanner) End() bool {
	d.ws()
	return d.pos == len(d.data)
}

// Next returns the next byte after whitespace and steps over it, or 0 at
// the end (0 is never valid outside a string).
func (d *Scanner) Next() byte {
	c := d.Peek()
	if c != 0 {
		d.pos++
	}
	return c
}

// Peek returns the next byte after whitespace, or 0 at the end.
func (d *Scanner) Peek() byte {
	d.ws()
	if d.pos >= len(d.data) {
		return 0
	}
	return d.data[d.pos]
}

// literal steps over lit if it is next.
func (d *Scanner) literal(lit string) bool {
	d.ws()
	if len(d.data)-d.pos >= len(lit) && string(d.data[d.pos:d.pos+len(lit)]) == lit {
		d.pos += len(lit)
		return true
	}
	return false
}

// Null steps over a null if it is next. Every field reader below takes a
// null as json.Unmarshal does: it leaves the field as it is.
func (d *Scanner) Null() bool { return d.literal("null") }

// Key reads an object key and its colon; it returns the key's bytes (nil
// when not in the form: escapes or control characters).
func (d *Scanner) Key() []byte {
	if d.Next() != '"' {
		return nil
	}
	start := d.pos
	for i := start; i < len(d.data); i++ {
		c := d.data[i]
		if c == '"' {
			d.pos = i + 1
			if d.Next() != ':' {
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

// Object reads an object from its '{' to its '}'. field reads the value
// of key and returns the key's bit, or ok false for an unknown key or a
// bad value; a repeated key gives false too (json.Unmarshal would merge
// the values). Object returns the bits of the keys it met.
func (d *Scanner) Object(field func(key []byte) (bit uint, ok bool)) (seen uint, ok bool) {
	if d.Next() != '{' {
		return 0, false
	}
	if d.Peek() == '}' {
		d.pos++
		return 0, true
	}
	for {
		bit, ok := field(d.Key())
		if !ok || seen&bit != 0 {
			return seen, false
		}
		seen |= bit
		if c := d.Next(); c == '}' {
			return seen, true
		} else if c != ',' {
			return seen, false
		}
	}
}

// Array reads an array from its '[' to its ']', calling elem to read each
// element.
func (d *Scanner) Array(elem func() bool) bool {
	if d.Next() != '[' {
		return false
	}
	if d.Peek() == ']' {
		d.pos++
		return true
	}
	for {
		if !elem() {
			return false
		}
		switch d.Next() {
		case ',':
		case ']':
			return true
		default:
			return false
		}
	}
}

// StrBytes reads a string without escapes or control characters in valid
// UTF-8 and returns its content, which shares the data's storage.
func (d *Scanner) StrBytes() ([]byte, bool) {
	if d.Next() != '"' {
		return nil, false
	}
	n := bytes.IndexByte(d.data[d.pos:], '"')
	if n < 0 {
		return nil, false
	}
	s := d.data[d.pos : d.pos+n]
	if !PlainASCII(s) {
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

// PlainASCII reports whether s has only bytes from 0x20 to 0x7f but the
// backslash, eight at a time.
func PlainASCII(s []byte) bool {
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

// Str reads a string field into a copy of its content. A string with
// escapes or bytes that are not UTF-8 (a URL's \u0026 as encoding/json
// writes it) is handed alone to json.Unmarshal, which then reads it as it
// would in the whole value.
func (d *Scanner) Str(s *string) bool {
	if d.Null() {
		return true
	}
	start := d.pos
	if v, ok := d.StrBytes(); ok {
		*s = string(v)
		return true
	}
	d.pos = start
	if d.Peek() != '"' || !d.skipString() {
		return false
	}
	return json.Unmarshal(d.data[start:d.pos], s) == nil
}

// Strs reads a list of strings into *ss as json.Unmarshal does, appending
// to out: non-nil and empty, with room for the usual count (so [] gives an
// empty, non-nil slice). null leaves *ss as it is.
func (d *Scanner) Strs(ss *[]string, out []string) bool {
	if d.Null() {
		return true
	}
	ok := d.Array(func() bool {
		out = append(out, "")
		return d.Str(&out[len(out)-1])
	})
	*ss = out
	return ok
}

// Uint reads an unsigned number of at most max: plain decimal digits (a
// sign, fraction or exponent gives false). null gives 0.
func (d *Scanner) Uint(max uint64) (uint64, bool) {
	if d.Null() {
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
	// A fraction or exponent shows as the next token not being , ] or }.
	return n, true
}

// Uint64 reads a uint64 field (null leaves it 0, as Uint).
func (d *Scanner) Uint64(v *uint64) bool {
	n, ok := d.Uint(math.MaxUint64)
	*v = n
	return ok
}

// Int reads an int field that is not negative (a negative one gives
// false).
func (d *Scanner) Int(v *int) bool {
	n, ok := d.Uint(math.MaxInt)
	*v = int(n)
	return ok
}

// Time reads a time field as json.Unmarshal does: it hands the quoted
// string to time.Time.UnmarshalJSON.
func (d *Scanner) Time(t *time.Time) bool {
	if d.Null() {
		return true
	}
	start := d.pos
	if _, ok := d.StrBytes(); !ok {
		return false
	}
	return t.UnmarshalJSON(d.data[start:d.pos]) == nil
}

// Raw reads any JSON value and stores a copy of its bytes from its first
// to its last byte, as json.RawMessage.UnmarshalJSON does (null included).
func (d *Scanner) Raw(m *json.RawMessage) bool {
	d.ws()
	start := d.pos
	if !d.Skip() {
		return false
	}
	*m = append(json.RawMessage(nil), d.data[start:d.pos]...)
	return true
}

// Skip steps over one valid JSON value nested at most MaxDepth deep.
func (d *Scanner) Skip() bool { return d.skip(0) }

func (d *Scanner) skip(depth int) bool {
	switch c := d.Peek(); {
	case c == '{' || c == '[':
		if depth >= MaxDepth {
			return false
		}
		if c == '[' {
			return d.Array(func() bool { return d.skip(depth + 1) })
		}
		d.pos++
		if d.Peek() == '}' {
			d.pos++
			return true
		}
		for {
			// Any key, escapes included, repeated or not.
			if d.Peek() != '"' || !d.skipString() || d.Next() != ':' || !d.skip(depth+1) {
				return false
			}
			if c := d.Next(); c == '}' {
				return true
			} else if c != ',' {
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

// skipString steps over a valid JSON string at pos, escapes included;
// like encoding/json's validity check it lets invalid UTF-8 pass.
func (d *Scanner) skipString() bool {
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

// skipNumber steps over a valid JSON number at pos.
func (d *Scanner) skipNumber() bool {
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
