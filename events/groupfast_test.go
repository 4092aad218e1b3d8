package events

import (
	"encoding/json"
	"strings"
	"testing"
)

// groupCases are sources and paths with the group encoding/json gives
// them, written out by hand: the fast path must give the same.
var groupCases = []struct {
	source, path, want string
}{
	{`{"space":"did:key:z6Mk"}`, "source.space", "did:key:z6Mk"},
	{` { "space" : "a" , "account" : "b" } `, "source.account", "b"},
	{`{"space":42}`, "source.space", "42"},
	{`{"space":-1.5e3}`, "source.space", "-1.5e3"},
	{`{"space":true}`, "source.space", "true"},
	{`{"space":null}`, "source.space", ""},
	{`{"space":""}`, "source.space", ""},
	{`{"space":{"id":"x"}}`, "source.space", ""},
	{`{"space":["x"]}`, "source.space", ""},
	{`{"org":{"team":{"id":"t1"}}}`, "source.org.team.id", "t1"},
	{`{"org":{"team":"flat"}}`, "source.org.team.id", ""},
	{`{"org":null}`, "source.org.team", ""},
	{`{"other":"x"}`, "source.space", ""},
	{`"space"`, "source.space", ""},
	{`[1,2]`, "source.space", ""},
	{`null`, "source.space", ""},
	{`{"space":"a"} trailing`, "source.space", ""},
	{`{"space":"a",}`, "source.space", ""},
	{`{"space":"a","space":"b"}`, "source.space", "b"},
	{`{"sp\u0061ce":"esc"}`, "source.space", "esc"},
	{`{"space":"caf\u00e9"}`, "source.space", "café"},
	{`{"space":"` + strings.Repeat("x", MaxGroup) + `"}`, "source.space", strings.Repeat("x", MaxGroup)},
	{`{"space":"` + strings.Repeat("x", MaxGroup+1) + `"}`, "source.space", ""},
	{`{"a":{"b":[{"c":1}]},"space":"deep-skip"}`, "source.space", "deep-skip"},
	{`{"space":"x"`, "source.space", ""},
}

func TestGroupOfGivesEncodingJSONsGroup(t *testing.T) {
	for _, c := range groupCases {
		if got := GroupOf(json.RawMessage(c.source), c.path); got != c.want {
			t.Errorf("GroupOf(%s, %s) = %q, want %q", c.source, c.path, got, c.want)
		}
		if got := groupOfJSON(json.RawMessage(c.source), c.path); got != c.want {
			t.Errorf("groupOfJSON(%s, %s) = %q, want %q", c.source, c.path, got, c.want)
		}
	}
	// The fast path answers the common forms itself.
	for _, src := range []string{`{"space":"a","account":"b"}`, `{"space":7}`, `{"x":{"y":[1,"z"]},"space":null}`} {
		if _, ok := groupOfFast([]byte(src), "source.space"); !ok {
			t.Errorf("the fast path gives up on %s", src)
		}
	}
}

// The fast path is encoding/json's answer for any source and path.
func FuzzGroupOfFastEqualsJSON(f *testing.F) {
	for _, c := range groupCases {
		f.Add(c.source, c.path)
	}
	f.Fuzz(func(t *testing.T, source, path string) {
		if path == "" || source == "" {
			return
		}
		want := groupOfJSON(json.RawMessage(source), path)
		if got, ok := groupOfFast([]byte(source), path); ok && got != want {
			t.Fatalf("groupOfFast(%q, %q) = %q, encoding/json gives %q", source, path, got, want)
		}
		if got := GroupOf(json.RawMessage(source), path); got != want {
			t.Fatalf("GroupOf(%q, %q) = %q, encoding/json gives %q", source, path, got, want)
		}
	})
}

func BenchmarkGroupOf(b *testing.B) {
	src := json.RawMessage(`{"space":"did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK","account":"did:mailto:example.com:alice"}`)
	for _, impl := range []struct {
		name string
		fn   func(json.RawMessage, string) string
	}{{"fast", GroupOf}, {"json", groupOfJSON}} {
		b.Run(impl.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if impl.fn(src, "source.space") == "" {
					b.Fatal("no group")
				}
			}
		})
	}
}
