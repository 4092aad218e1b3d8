package aggregator

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"time"
	"unicode/utf8"
)

// DecodeBatch decodes one aggregate-log message into b (reset first). It is
// json.Unmarshal's equal on every input: a fast path reads the form
// encoding/json writes for a Batch; anything it does not recognise (escapes
// it does not handle, unknown fields, other whitespace, numbers it can't
// take, ...) falls back to json.Unmarshal, so results and errors are always
// those of json.Unmarshal.
func DecodeBatch(data []byte, b *Batch) error {
	if decodeFast(data, b) {
		return nil
	}
	*b = Batch{}
	return json.Unmarshal(data, b)
}

// decodeFast decodes data into b and reports true if data is in the form it
// reads; b is then exactly what json.Unmarshal would make of data in a fresh
// Batch. On false, b is untouched.
//
// The form: the compact JSON encoding/json writes for a Batch, with the keys
// of known fields in any order, each at most once (json.Unmarshal merges
// repeated keys); no whitespace outside strings; strings without escapes or
// control characters, in valid UTF-8; numbers as plain decimal digits that
// fit the field; null where json.Unmarshal leaves the field zero (or sets a
// nil slice or pointer); no deals. Record.Source may be any JSON value
// without whitespace and nesting at most maxRawDepth deep; it keeps its
// bytes as they are.
func decodeFast(data []byte, b *Batch) bool {
	d := batchScanner{data: data}
	var out Batch
	if !d.batch(&out) || d.pos != len(data) {
		return false
	}
	*b = out
	return true
}

// maxRawDepth bounds the nesting of a Source value the fast path skips.
const maxRawDepth = 64

// batchScanner reads data from pos on. Each method reports whether what it
// met is in the fast path's form; on false the caller gives up.
type batchScanner struct {
	data []byte
	pos  int
}

// next returns the byte at pos and steps over it, or 0 at the end (0 is
// never valid outside a string).
func (d *batchScanner) next() byte {
	if d.pos >= len(d.data) {
		return 0
	}
	c := d.data[d.pos]
	d.pos++
	return c
}

func (d *batchScanner) peek() byte {
	if d.pos >= len(d.data) {
		return 0
	}
	return d.data[d.pos]
}

// null steps over a null literal if one is at pos.
func (d *batchScanner) null() bool {
	if len(d.data)-d.pos >= 4 && string(d.data[d.pos:d.pos+4]) == "null" {
		d.pos += 4
		return true
	}
	return false
}

// key reads an object key and its colon; it returns the key's bytes (nil
// when not in the form: escapes or control characters).
func (d *batchScanner) key() []byte {
	if d.next() != '"' {
		return nil
	}
	start := d.pos
	for i := start; i < len(d.data); i++ {
		c := d.data[i]
		if c == '"' {
			if i+1 >= len(d.data) || d.data[i+1] != ':' {
				return nil
			}
			d.pos = i + 2
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
func (d *batchScanner) strBytes() ([]byte, bool) {
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
			return nil, false
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

// str reads a string field: null leaves it "".
func (d *batchScanner) str(s *string) bool {
	if d.null() {
		return true
	}
	v, ok := d.strBytes()
	if ok {
		*s = string(v)
	}
	return ok
}

// uint reads an unsigned field of at most max: null leaves it 0.
func (d *batchScanner) uint(max uint64) (uint64, bool) {
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

func (d *batchScanner) u64(v *uint64) bool {
	n, ok := d.uint(math.MaxUint64)
	*v = n
	return ok
}

func (d *batchScanner) int(v *int) bool {
	n, ok := d.uint(math.MaxInt)
	*v = int(n)
	return ok
}

// time reads a time field as json.Unmarshal does: it hands the quoted
// string to time.Time.UnmarshalJSON. null leaves it zero.
func (d *batchScanner) time(t *time.Time) bool {
	if d.null() {
		return true
	}
	if d.next() != '"' {
		return false
	}
	start := d.pos - 1
	for i := d.pos; i < len(d.data); i++ {
		c := d.data[i]
		if c == '"' {
			if t.UnmarshalJSON(d.data[start:i+1]) != nil {
				return false
			}
			d.pos = i + 1
			return true
		}
		if c == '\\' || c < 0x20 || c >= 0x7f {
			return false
		}
	}
	return false
}

// batch reads a Batch object. Here and in decision and record, seen has a
// bit per known key: a repeated key gives false (json.Unmarshal would merge
// the values), as does an unknown one.
func (d *batchScanner) batch(b *Batch) bool {
	if d.next() != '{' {
		return false
	}
	return d.fields(func(key []byte) (bit uint, ok bool) {
		switch string(key) {
		case "in":
			bit, ok = 1<<0, d.u64(&b.In)
		case "now":
			bit, ok = 1<<1, d.time(&b.Now)
		case "decisions":
			bit, ok = 1<<2, d.decisions(&b.Decisions)
		}
		return bit, ok
	})
}

// fields reads an object's members after its '{' up to its '}': field
// reads the value of key and returns the key's bit, or ok false for an
// unknown key or a bad value. A repeated key gives false too.
func (d *batchScanner) fields(field func(key []byte) (bit uint, ok bool)) bool {
	if d.peek() == '}' {
		d.pos++
		return true
	}
	var seen uint
	for {
		bit, ok := field(d.key())
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		switch d.next() {
		case ',':
		case '}':
			return true
		default:
			return false
		}
	}
}

func (d *batchScanner) decisions(ds *[]Decision) bool {
	if d.null() {
		return true
	}
	if d.next() != '[' {
		return false
	}
	if d.peek() == ']' {
		d.pos++
		*ds = []Decision{}
		return true
	}
	out := make([]Decision, 1) // most batches have one
	for i := 0; ; i++ {
		if i == len(out) {
			out = append(out, Decision{})
		}
		if !d.decision(&out[i]) {
			return false
		}
		switch d.next() {
		case ',':
		case ']':
			*ds = out
			return true
		default:
			return false
		}
	}
}

func (d *batchScanner) decision(x *Decision) bool {
	if d.null() {
		return true // json.Unmarshal leaves the element zero
	}
	if d.next() != '{' {
		return false
	}
	return d.fields(func(key []byte) (bit uint, ok bool) {
		switch string(key) {
		case "type":
			bit, ok = 1<<0, d.known(&x.Type)
		case "car":
			bit, ok = 1<<1, d.str(&x.Car)
		case "record":
			bit, ok = 1<<2, d.record(&x.Record)
		case "piece":
			bit, ok = 1<<3, d.str(&x.Piece)
		case "pieceV1":
			bit, ok = 1<<4, d.str(&x.PieceV1)
		case "pieceSize":
			bit, ok = 1<<5, d.u64(&x.PieceSize)
		case "aggregate":
			bit, ok = 1<<6, d.u64(&x.Aggregate)
		case "from":
			bit, ok = 1<<7, d.u64(&x.From)
		case "first":
			bit, ok = 1<<8, d.int(&x.First)
		case "count":
			bit, ok = 1<<9, d.int(&x.Count)
		case "payload":
			bit, ok = 1<<10, d.u64(&x.Payload)
		case "closed":
			bit, ok = 1<<11, d.known(&x.Closed)
		case "status":
			bit, ok = 1<<12, d.known(&x.Status)
		case "reason":
			bit, ok = 1<<13, d.str(&x.Reason)
		case "at":
			bit, ok = 1<<14, d.time(&x.At)
			// "deals" and unknown keys: not in the form.
		}
		return bit, ok
	})
}

// known reads a string field that usually holds one of a few constants and
// shares the constant's storage instead of allocating.
func (d *batchScanner) known(s *string) bool {
	if d.null() {
		return true
	}
	v, ok := d.strBytes()
	if !ok {
		return false
	}
	switch string(v) {
	case DecCarQueued:
		*s = DecCarQueued
	case DecCarAdded:
		*s = DecCarAdded
	case DecCarRejected:
		*s = DecCarRejected
	case DecInputIgnored:
		*s = DecInputIgnored
	case DecAggClock:
		*s = DecAggClock
	case DecAggReady:
		*s = DecAggReady
	case DecAggOffered:
		*s = DecAggOffered
	case DecAggOfferFailed:
		*s = DecAggOfferFailed
	case DecAggDeals:
		*s = DecAggDeals
	case DecAggFailed:
		*s = DecAggFailed
	case DecCarsRequeued:
		*s = DecCarsRequeued
	case ClosedFull:
		*s = ClosedFull
	case ClosedMaxWait:
		*s = ClosedMaxWait
	case ClosedForced:
		*s = ClosedForced
	case "published":
		*s = "published"
	case "active":
		*s = "active"
	case "failed":
		*s = "failed"
	default:
		*s = string(v)
	}
	return true
}

func (d *batchScanner) record(rp **Record) bool {
	if d.null() {
		return true // json.Unmarshal sets a nil pointer, which it is
	}
	if d.next() != '{' {
		return false
	}
	// One allocation holds the record and the backing of a one-URL list.
	rb := new(struct {
		r    Record
		urls [1]string
	})
	r := &rb.r
	*rp = r
	return d.fields(func(key []byte) (bit uint, ok bool) {
		switch string(key) {
		case "size":
			bit, ok = 1<<0, d.u64(&r.Size)
		case "md5":
			bit, ok = 1<<1, d.str(&r.MD5)
		case "urls":
			bit, ok = 1<<2, d.strs(&r.URLs, rb.urls[:0])
		case "replicatedAt":
			bit, ok = 1<<3, d.str(&r.ReplicatedAt)
		case "source":
			bit, ok = 1<<4, d.raw(&r.Source)
		}
		return bit, ok
	})
}

// strs reads a list of strings, appending to out (empty, with room for
// the usual one).
func (d *batchScanner) strs(ss *[]string, out []string) bool {
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
		var s string
		if !d.str(&s) {
			return false
		}
		out = append(out, s)
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

// raw reads any JSON value without whitespace and stores a copy of its
// bytes, as json.RawMessage.UnmarshalJSON does (null included).
func (d *batchScanner) raw(m *json.RawMessage) bool {
	start := d.pos
	if !d.skip(0) {
		return false
	}
	*m = append(json.RawMessage(nil), d.data[start:d.pos]...)
	return true
}

// skip steps over one valid JSON value without whitespace.
func (d *batchScanner) skip(depth int) bool {
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

func (d *batchScanner) literal(lit string) bool {
	if len(d.data)-d.pos >= len(lit) && string(d.data[d.pos:d.pos+len(lit)]) == lit {
		d.pos += len(lit)
		return true
	}
	return false
}

// skipString steps over a valid JSON string, escapes included; like
// encoding/json's validity check it lets invalid UTF-8 pass.
func (d *batchScanner) skipString() bool {
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
			switch d.next() {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				for range 4 {
					h := d.next()
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
func (d *batchScanner) skipNumber() bool {
	digits := func() bool {
		start := d.pos
		for d.pos < len(d.data) && d.data[d.pos] >= '0' && d.data[d.pos] <= '9' {
			d.pos++
		}
		return d.pos > start
	}
	if d.peek() == '-' {
		d.pos++
	}
	switch c := d.peek(); {
	case c == '0':
		d.pos++
	case c >= '1' && c <= '9':
		digits()
	default:
		return false
	}
	if d.peek() == '.' {
		d.pos++
		if !digits() {
			return false
		}
	}
	if c := d.peek(); c == 'e' || c == 'E' {
		d.pos++
		if c := d.peek(); c == '+' || c == '-' {
			d.pos++
		}
		if !digits() {
			return false
		}
	}
	return true
}
