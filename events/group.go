package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// Grouping: a CAR's group is the value at Settings.GroupBy in its
// car.replicated's source, decided once, when the fold accepts the CAR.

const (
	// MaxGroup bounds a group's name. A longer value is not cut (two
	// tenants must not share a group by a common prefix): its CAR goes to
	// the shared pool.
	MaxGroup = 128
	// MaxGroupPath bounds a GroupBy path's length and its depth below
	// "source".
	MaxGroupPath  = 128
	maxGroupDepth = 4
	// GroupNone is how flags and settings.change spell "no grouping".
	GroupNone = "none"
)

// ParseGroupBy checks a --group-by value and returns it as Settings keep
// it: "" for none (or ""), else "source." and one to four object keys.
func ParseGroupBy(s string) (string, error) {
	if s == "" || s == GroupNone {
		return "", nil
	}
	keys, ok := strings.CutPrefix(s, "source.")
	switch {
	case !ok:
		return "", fmt.Errorf("group-by %s: a path into the event's source, like source.space (or %s)", Excerpt(s), GroupNone)
	case len(s) > MaxGroupPath:
		return "", fmt.Errorf("group-by %s: longer than %d bytes", Excerpt(s), MaxGroupPath)
	}
	parts := strings.Split(keys, ".")
	if len(parts) > maxGroupDepth {
		return "", fmt.Errorf("group-by %s: more than %d keys below source", Excerpt(s), maxGroupDepth)
	}
	for _, p := range parts {
		if p == "" {
			return "", fmt.Errorf("group-by %s: an empty key", Excerpt(s))
		}
	}
	return s, nil
}

// GroupOf is the group path names in source (a car.replicated's source
// object): the value there, a string as it is, a number or a boolean as
// its JSON text. It is "" (the shared pool) when path is "", when source
// has nothing there, or holds null, an object, an array, an empty string
// or a name longer than MaxGroup.
func GroupOf(source json.RawMessage, path string) string {
	if path == "" || len(source) == 0 {
		return ""
	}
	if name, ok := groupOfFast(source, path); ok {
		return name
	}
	return groupOfJSON(source, path)
}

// groupOfJSON is GroupOf by encoding/json: the reference groupOfFast is
// held to, and where it falls back.
func groupOfJSON(source json.RawMessage, path string) string {
	keys := strings.Split(strings.TrimPrefix(path, "source."), ".")
	v := source
	for _, k := range keys {
		var obj map[string]json.RawMessage
		if json.Unmarshal(v, &obj) != nil {
			return ""
		}
		if v = obj[k]; v == nil {
			return ""
		}
	}
	v = bytes.TrimSpace(v)
	var name string
	switch {
	case len(v) == 0:
		return ""
	case v[0] == '"':
		if json.Unmarshal(v, &name) != nil {
			return ""
		}
	case v[0] == '-' || (v[0] >= '0' && v[0] <= '9') || string(v) == "true" || string(v) == "false":
		name = string(v)
	}
	if len(name) > MaxGroup {
		return ""
	}
	return name
}
