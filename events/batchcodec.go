package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"iter"
	"strconv"
	"time"

	"github.com/ferry-dev/ferry/internal/jsonscan"
	"github.com/ferry-dev/ferry/internal/jsonw"
)

// A message of the aggregate log holds one or more batches, in input order:
// each batch as json.Marshal writes it, with a newline between two. JSON as
// encoding/json writes it never holds a newline (it escapes them inside
// strings), so a newline only ever separates batches, and a message of one
// batch is that batch's JSON alone, as every message was before batches
// were grouped.
const batchSep = '\n'

// Batches yields the encoded batches of one aggregate-log message, in order.
func Batches(msg []byte) iter.Seq[[]byte] {
	return bytes.SplitSeq(msg, []byte{batchSep})
}

// EachBatch decodes the batches of one aggregate-log message in order and
// calls fn with each; it stops at the first error.
func EachBatch(msg []byte, fn func(*Batch) error) error {
	for data := range Batches(msg) {
		var b Batch
		if err := DecodeBatch(data, &b); err != nil {
			return err
		}
		if err := fn(&b); err != nil {
			return err
		}
	}
	return nil
}

// AppendBatch appends encoded, one batch's JSON (json.Marshal of a Batch),
// to msg, an aggregate-log message being built.
func AppendBatch(msg, encoded []byte) []byte {
	if len(msg) > 0 {
		msg = append(msg, batchSep)
	}
	return append(msg, encoded...)
}

// DecodeBatch decodes one batch of an aggregate-log message into b (reset first). It is
// json.Unmarshal's equal on every input: a fast path reads the form
// encoding/json writes for a Batch; anything it does not recognise (escapes
// it does not handle, unknown fields, numbers it can't take, ...) falls back
// to json.Unmarshal, so results and errors are always those of
// json.Unmarshal.
func DecodeBatch(data []byte, b *Batch) error {
	if decodeBatchFast(data, b) {
		return nil
	}
	*b = Batch{}
	return json.Unmarshal(data, b)
}

// decodeFast decodes data into b and reports true if data is in the form it
// reads; b is then exactly what json.Unmarshal would make of data in a fresh
// Batch. On false, b is untouched.
//
// The form: a JSON object with whitespace anywhere between tokens, as
// jsonscan reads it; the keys of known fields in any order, each at most
// once (json.Unmarshal merges repeated keys); keys, times and the type,
// closed and status strings without escapes or control characters, in valid
// UTF-8 (other strings may have escapes: json.Unmarshal reads those alone);
// numbers as plain decimal digits that fit the field; null where
// json.Unmarshal leaves the field zero (or sets a nil slice or pointer); no
// deals. Record.Source may be any JSON value nested at most
// jsonscan.MaxDepth deep; it keeps its bytes as they are.
func decodeBatchFast(data []byte, b *Batch) bool {
	d := batchScanner{jsonscan.New(data)}
	var out Batch
	if !d.batch(&out) || !d.End() {
		return false
	}
	*b = out
	return true
}

// batchScanner reads the aggregate log's types with jsonscan. Each method
// reports whether what it met is in the fast path's form; on false the
// caller gives up.
type batchScanner struct{ jsonscan.Scanner }

// batch reads a Batch object. Here and in decision and record, each known
// key has a bit for jsonscan.Scanner.Object; an unknown key gives false.
func (d *batchScanner) batch(b *Batch) bool {
	_, ok := d.Object(func(key []byte) (bit uint, ok bool) {
		switch string(key) {
		case "in":
			bit, ok = 1<<0, d.Uint64(&b.In)
		case "now":
			bit, ok = 1<<1, d.Time(&b.Now)
		case "decisions":
			bit, ok = 1<<2, d.decisions(&b.Decisions)
		}
		return bit, ok
	})
	return ok
}

// decisions reads a list of decisions as jsonscan.Scanner.Strs does one of
// strings.
func (d *batchScanner) decisions(ds *[]Decision) bool {
	if d.Null() {
		return true
	}
	out := []Decision{} // the first append makes room for one, as most batches have
	ok := d.Array(func() bool {
		out = append(out, Decision{})
		return d.decision(&out[len(out)-1])
	})
	*ds = out
	return ok
}

func (d *batchScanner) decision(x *Decision) bool {
	if d.Null() {
		return true // json.Unmarshal leaves the element zero
	}
	_, ok := d.Object(func(key []byte) (bit uint, ok bool) {
		switch string(key) {
		case "type":
			bit, ok = 1<<0, d.known(&x.Type)
		case "car":
			bit, ok = 1<<1, d.Str(&x.Car)
		case "record":
			bit, ok = 1<<2, d.record(&x.Record)
		case "piece":
			bit, ok = 1<<3, d.Str(&x.Piece)
		case "pieceV1":
			bit, ok = 1<<4, d.Str(&x.PieceV1)
		case "pieceSize":
			bit, ok = 1<<5, d.Uint64(&x.PieceSize)
		case "aggregate":
			bit, ok = 1<<6, d.Uint64(&x.Aggregate)
		case "from":
			bit, ok = 1<<7, d.Uint64(&x.From)
		case "first":
			bit, ok = 1<<8, d.Int(&x.First)
		case "count":
			bit, ok = 1<<9, d.Int(&x.Count)
		case "payload":
			bit, ok = 1<<10, d.Uint64(&x.Payload)
		case "closed":
			bit, ok = 1<<11, d.known(&x.Closed)
		case "group":
			bit, ok = 1<<16, d.Str(&x.Group)
		case "status":
			bit, ok = 1<<12, d.known(&x.Status)
		case "reason":
			bit, ok = 1<<13, d.Str(&x.Reason)
		case "at":
			bit, ok = 1<<14, d.Time(&x.At)
		case "httpStatus":
			bit, ok = 1<<15, d.Int(&x.HTTPStatus)
			// "deals" and unknown keys: not in the form.
		}
		return bit, ok
	})
	return ok
}

// known reads a string field that usually holds one of a few constants and
// shares the constant's storage instead of allocating.
func (d *batchScanner) known(s *string) bool {
	if d.Null() {
		return true
	}
	v, ok := d.StrBytes()
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
	case DecAggReleased:
		*s = DecAggReleased
	case ReleasedMaxWait:
		*s = ReleasedMaxWait
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
	if d.Null() {
		return true // json.Unmarshal sets a nil pointer, which it is
	}
	if d.Peek() != '{' {
		return false
	}
	// One allocation holds the record and the backing of a one-URL list.
	rb := new(struct {
		r    Record
		urls [1]string
	})
	r := &rb.r
	*rp = r
	_, ok := d.Object(func(key []byte) (bit uint, ok bool) {
		switch string(key) {
		case "size":
			bit, ok = 1<<0, d.Uint64(&r.Size)
		case "md5":
			bit, ok = 1<<1, d.Str(&r.MD5)
		case "urls":
			bit, ok = 1<<2, d.Strs(&r.URLs, rb.urls[:0])
		case "replicatedAt":
			bit, ok = 1<<3, d.Str(&r.ReplicatedAt)
		case "source":
			bit, ok = 1<<4, d.Raw(&r.Source)
		}
		return bit, ok
	})
	return ok
}

// EncodeBatch appends json.Marshal(b)'s bytes to dst, without reflection:
// the runner encodes a batch per input, and encoding/json's reflection was
// a fifth of the runner's CPU. Values the fast path does not write itself
// (deals, invalid JSON in a source) go through encoding/json; a batch that
// json.Marshal refuses (a time outside years 0–9999, a source that is not
// JSON) gets json.Marshal's error. A test holds it equal to json.Marshal.
func EncodeBatch(dst []byte, b *Batch) ([]byte, error) {
	out, err := appendBatch(dst, b)
	if err != nil {
		data, err := json.Marshal(b)
		if err != nil {
			return dst, err
		}
		return append(dst, data...), nil
	}
	return out, nil
}

func appendBatch(dst []byte, b *Batch) ([]byte, error) {
	var err error
	dst = append(dst, `{"in":`...)
	dst = strconv.AppendUint(dst, b.In, 10)
	if !b.Now.IsZero() {
		dst = append(dst, `,"now":`...)
		if dst, err = appendTime(dst, b.Now); err != nil {
			return nil, err
		}
	}
	dst = append(dst, `,"decisions":`...)
	if b.Decisions == nil {
		return append(dst, "null}"...), nil
	}
	dst = append(dst, '[')
	for i := range b.Decisions {
		if i > 0 {
			dst = append(dst, ',')
		}
		if dst, err = appendDecision(dst, &b.Decisions[i]); err != nil {
			return nil, err
		}
	}
	return append(dst, "]}"...), nil
}

// errSlowPath sends a batch to json.Marshal.
var errSlowPath = errors.New("batch needs json.Marshal")

func appendDecision(dst []byte, d *Decision) ([]byte, error) {
	if d.Settings != nil {
		return nil, errSlowPath // once per log: not worth a writer of its own
	}
	var err error
	dst = append(dst, `{"type":`...)
	dst = jsonw.String(dst, d.Type)
	dst = appendStringField(dst, `,"car":`, d.Car)
	if d.Record != nil {
		dst = append(dst, `,"record":`...)
		if dst, err = appendRecord(dst, d.Record); err != nil {
			return nil, err
		}
	}
	dst = appendStringField(dst, `,"piece":`, d.Piece)
	dst = appendStringField(dst, `,"pieceV1":`, d.PieceV1)
	dst = appendUintField(dst, `,"pieceSize":`, d.PieceSize)
	dst = appendUintField(dst, `,"aggregate":`, d.Aggregate)
	dst = appendUintField(dst, `,"from":`, d.From)
	dst = appendIntField(dst, `,"first":`, d.First)
	dst = appendIntField(dst, `,"count":`, d.Count)
	dst = appendUintField(dst, `,"payload":`, d.Payload)
	dst = appendStringField(dst, `,"closed":`, d.Closed)
	dst = appendStringField(dst, `,"group":`, d.Group)
	dst = appendStringField(dst, `,"status":`, d.Status)
	if len(d.Deals) != 0 {
		// Rare (one decision per deal report) and varied: encoding/json.
		if dst, err = jsonw.Value(append(dst, `,"deals":`...), d.Deals); err != nil {
			return nil, err
		}
	}
	dst = appendStringField(dst, `,"reason":`, d.Reason)
	if !d.At.IsZero() {
		dst = append(dst, `,"at":`...)
		if dst, err = appendTime(dst, d.At); err != nil {
			return nil, err
		}
	}
	dst = appendIntField(dst, `,"httpStatus":`, d.HTTPStatus)
	return append(dst, '}'), nil
}

func appendRecord(dst []byte, r *Record) ([]byte, error) {
	dst = append(dst, `{"size":`...)
	dst = strconv.AppendUint(dst, r.Size, 10)
	dst = append(dst, `,"md5":`...)
	dst = jsonw.String(dst, r.MD5)
	dst = jsonw.Strings(append(dst, `,"urls":`...), r.URLs)
	dst = appendStringField(dst, `,"replicatedAt":`, r.ReplicatedAt)
	if len(r.Source) != 0 {
		dst = append(dst, `,"source":`...)
		var err error
		if dst, err = jsonw.Raw(dst, r.Source); err != nil {
			return nil, err
		}
	}
	return append(dst, '}'), nil
}

// appendTime appends t as time.Time's MarshalJSON writes it.
func appendTime(dst []byte, t time.Time) ([]byte, error) {
	dst = append(dst, '"')
	dst, err := t.AppendText(dst)
	if err != nil {
		return nil, err
	}
	return append(dst, '"'), nil
}

// The omitempty fields.

func appendStringField(dst []byte, key, s string) []byte {
	if s == "" {
		return dst
	}
	return jsonw.String(append(dst, key...), s)
}

func appendUintField(dst []byte, key string, v uint64) []byte {
	if v == 0 {
		return dst
	}
	return strconv.AppendUint(append(dst, key...), v, 10)
}

func appendIntField(dst []byte, key string, v int) []byte {
	if v == 0 {
		return dst
	}
	return strconv.AppendInt(append(dst, key...), int64(v), 10)
}
