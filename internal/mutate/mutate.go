// Package mutate makes random near-misses of valid JSON for tests that hold
// a fast decoder equal to encoding/json: the inputs a hand-written scanner
// gets wrong are the ones that are almost right.
package mutate

import (
	"bytes"
	"math"
	"math/rand/v2"
)

// JSON applies one to three random edits to a copy of data: replaced,
// deleted or inserted bytes (mostly JSON's own), whitespace, truncation, a
// repeated span (duplicate keys and values) or a letter's case flipped.
func JSON(r *rand.Rand, data []byte) []byte {
	const interesting = "{}[],:\"\\ \t\n\r0123456789-+.eEnulltruefalse\x00\x1f\x7f\xff\xc3"
	out := bytes.Clone(data)
	for range 1 + r.IntN(3) {
		if len(out) == 0 {
			out = append(out, interesting[r.IntN(len(interesting))])
			continue
		}
		i := r.IntN(len(out))
		switch r.IntN(8) {
		case 0:
			out[i] = interesting[r.IntN(len(interesting))]
		case 1:
			out[i] = byte(r.IntN(256))
		case 2:
			out = append(out[:i], out[i+1:]...)
		case 3:
			out = append(out[:i], append([]byte{interesting[r.IntN(len(interesting))]}, out[i:]...)...)
		case 4:
			out = append(out[:i], append([]byte{" \t\n\r"[r.IntN(4)]}, out[i:]...)...)
		case 5:
			out = out[:i]
		case 6:
			j := i + r.IntN(len(out)-i)
			span := bytes.Clone(out[i:j])
			out = append(out[:j], append(span, out[j:]...)...)
		case 7:
			if c := out[i]; 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' {
				out[i] ^= 0x20
			}
		}
	}
	return out
}

// Value is a random JSON value (as encoding/json decodes into any) of at
// most about four levels, with strings from str: nulls, booleans, awkward
// floats, arrays and objects.
func Value(r *rand.Rand, depth int, str func(*rand.Rand) string) any {
	k := r.IntN(8)
	if depth > 3 {
		k = r.IntN(5)
	}
	switch k {
	case 0:
		return nil
	case 1:
		return r.IntN(2) == 0
	case 2:
		return []float64{0, -0.5, 1e21, 1e-7, 123456789, -3, math.MaxFloat64}[r.IntN(7)]
	case 3, 4:
		return str(r)
	case 5:
		var a []any
		for range r.IntN(4) {
			a = append(a, Value(r, depth+1, str))
		}
		return a
	}
	m := map[string]any{}
	for range r.IntN(4) {
		m[str(r)] = Value(r, depth+1, str)
	}
	return m
}
