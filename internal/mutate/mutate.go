// Package mutate makes inputs for tests that hold a parser to its
// contract: random near-misses of valid JSON and random values for the
// fast decoders held equal to encoding/json (the inputs a hand-written
// scanner gets wrong are the ones that are almost right), and the
// committed seed corpora of fuzz targets.
package mutate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Mutations feeds n random mutations (JSON) of seeds to agree, which checks
// one input and reports whether it took the fast path (testing.Short cuts
// n tenfold), and logs how many were valid JSON and how many took it.
func Mutations(tb testing.TB, r *rand.Rand, seeds [][]byte, n int, agree func(data []byte) (fast bool)) {
	tb.Helper()
	if testing.Short() {
		n /= 10
	}
	valid, fast := 0, 0
	for range n {
		data := JSON(r, seeds[r.IntN(len(seeds))])
		if json.Valid(data) {
			valid++
		}
		if agree(data) {
			fast++
		}
	}
	tb.Logf("%d mutations: %d valid JSON, %d on the fast path", n, valid, fast)
}

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

// hostile are the runes, and broken sequences, that JSON escapes,
// replaces or rejects.
var hostile = []string{
	"a", "Z", "0", " ", "-", ".", ":", "/", "\"", "\\", "<", ">", "&", "'", "\n", "\t", "\r",
	"\x00", "\x01", "\x1f", "\x7f", "é", "ß", "世", "😀", "\u2028", "\u2029", "\ufffd", "\uffff",
	"\xff", "\xc3", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82",
}

// String is a random string: often empty or plain, sometimes one of
// typical (realistic values such as CIDs), otherwise full of what JSON
// escapes or replaces.
func String(r *rand.Rand, typical []string) string {
	switch r.IntN(6) {
	case 0:
		return ""
	case 1, 2:
		const plain = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_.:/"
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = plain[r.IntN(len(plain))]
		}
		return string(b)
	case 3:
		if len(typical) > 0 {
			return typical[r.IntN(len(typical))]
		}
	}
	var sb strings.Builder
	for range r.IntN(12) {
		sb.WriteString(hostile[r.IntN(len(hostile))])
	}
	return sb.String()
}

// Uint is a random uint64, often at the edges: zero, the maximum, any.
func Uint(r *rand.Rand) uint64 {
	switch r.IntN(5) {
	case 0:
		return 0
	case 1:
		return math.MaxUint64 - uint64(r.IntN(3))
	case 2:
		return r.Uint64()
	}
	return uint64(r.IntN(100000))
}

// WriteSeeds stores seeds as the committed corpus of fuzz target name, in
// testdata/fuzz/<name>, when FERRY_WRITE_FUZZ_SEEDS=1; otherwise it does
// nothing. Each more holds one further argument of the target per seed.
func WriteSeeds(tb testing.TB, name string, seeds [][]byte, more ...[]any) {
	if os.Getenv("FERRY_WRITE_FUZZ_SEEDS") != "1" {
		return
	}
	dir := filepath.Join("testdata", "fuzz", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	for i, s := range seeds {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		for _, m := range more {
			body += fmt.Sprintf("%T(%#v)\n", m[i], m[i])
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
}
