// Package jsonw appends JSON values exactly as encoding/json writes them,
// without reflection, for the hand-written encoders on hot paths (the
// aggregate log's batches, the status API's answer). Each encoder that
// uses it is held equal to json.Marshal by its own tests.
//
// Rules:
//   - The output is byte for byte what json.Marshal writes for the same
//     value, HTML escaping included.
//   - Values in a form the fast path does not handle are handed to
//     encoding/json, never approximated.
package jsonw

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// String appends s quoted as encoding/json quotes it. Strings that need no
// escaping (CIDs, hex, URLs, dates: almost everything ferry writes) are
// copied; the rest go through encoding/json.
func String(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < 0x20 || b >= utf8.RuneSelf || b == '"' || b == '\\' || b == '<' || b == '>' || b == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(dst, q...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// Strings appends ss as encoding/json writes a []string: null when nil,
// else an array of String.
func Strings(dst []byte, ss []string) []byte {
	if ss == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, '[')
	for i, s := range ss {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = String(dst, s)
	}
	return append(dst, ']')
}

// Raw appends a json.RawMessage as encoding/json does: compacted, with <,
// > and & escaped; invalid JSON is an error, as json.Marshal's.
func Raw(dst []byte, raw []byte) ([]byte, error) {
	plain := true
	for _, b := range raw {
		if b <= ' ' || b >= utf8.RuneSelf || b == '<' || b == '>' || b == '&' {
			plain = false
			break
		}
	}
	if plain && json.Valid(raw) {
		return append(dst, raw...), nil
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return nil, err
	}
	var escaped bytes.Buffer
	json.HTMLEscape(&escaped, compact.Bytes())
	return append(dst, escaped.Bytes()...), nil
}

// Value appends v as json.Marshal encodes it: for the rare, varied parts
// of an answer (deal lists) that are not worth an encoder of their own.
func Value(dst []byte, v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(dst, data...), nil
}
