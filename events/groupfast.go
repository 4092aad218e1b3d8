package events

import (
	"encoding/json"
	"strings"
	"unicode/utf8"

	"github.com/ferry-dev/ferry/internal/jsonscan"
)

// groupOfFast is GroupOf read with jsonscan, without the maps
// encoding/json makes of every level: the fold computes it for every
// car.replicated it accepts under a GroupBy. It reports false where the
// source is not in the form it reads (a key with escapes or invalid
// UTF-8, the group's string with escapes, the path's key repeated in an
// object, nesting deeper than jsonscan.MaxDepth, JSON jsonscan does not
// take); groupOfJSON then decides, so the answer is always groupOfJSON's
// (FuzzGroupOfFastEqualsJSON).
func groupOfFast(source []byte, path string) (string, bool) {
	v := source
	for k := range strings.SplitSeq(strings.TrimPrefix(path, "source."), ".") {
		d := jsonscan.New(v)
		if d.Peek() != '{' {
			// Not an object (or not JSON): json.Unmarshal into a map fails,
			// or leaves it empty for null.
			return "", true
		}
		var found []byte
		_, ok := d.Object(func(key []byte) (uint, bool) {
			switch {
			case key == nil || !utf8.Valid(key):
				// Escapes, or bytes encoding/json replaces: the key may be
				// k, or not, once it is decoded.
				return 0, false
			case string(key) != k:
				return 0, d.Skip()
			}
			var raw json.RawMessage
			ok := d.Raw(&raw)
			found = raw
			return 1, ok // a second k gives false: json.Unmarshal keeps the last
		})
		if !ok || !d.End() {
			return "", false
		}
		if found == nil {
			return "", true
		}
		v = found
	}
	var name string
	switch {
	case v[0] == '"':
		d := jsonscan.New(v)
		b, ok := d.StrBytes()
		if !ok {
			return "", false
		}
		name = string(b)
	case v[0] == '-' || (v[0] >= '0' && v[0] <= '9') || string(v) == "true" || string(v) == "false":
		name = string(v)
	}
	if len(name) > MaxGroup {
		return "", true
	}
	return name, true
}
