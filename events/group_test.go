package events_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/ferry-dev/ferry/events"
)

// PolicyNames (what serve, the CLI and the API treat as changeable) must
// be exactly what Settings.Fixed leaves out (what the fold and snapshots
// hold fixed): setting each field alone shows which Fixed zeroes.
func TestPolicyNamesAreWhatFixedLeavesOut(t *testing.T) {
	var zeroed []string
	typ := reflect.TypeFor[events.Settings]()
	for i := range typ.NumField() {
		var s events.Settings
		f := reflect.ValueOf(&s).Elem().Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString("x")
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Uint64:
			f.SetUint(1)
		case reflect.Int, reflect.Int64:
			f.SetInt(1)
		default:
			t.Fatalf("field %s of kind %s: teach this test to set it", typ.Field(i).Name, f.Kind())
		}
		if s.Fixed() == (events.Settings{}) {
			name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			zeroed = append(zeroed, name)
		}
	}
	if !slices.Equal(zeroed, events.PolicyNames) {
		t.Fatalf("Fixed leaves out %v, PolicyNames are %v", zeroed, events.PolicyNames)
	}
}

func TestParseGroupBy(t *testing.T) {
	for in, want := range map[string]string{
		"": "", "none": "", "source.space": "source.space", "source.a.b.c.d": "source.a.b.c.d",
		"space": "error", "source.": "error", "source..x": "error", "source.a.b.c.d.e": "error",
		"source." + strings.Repeat("x", events.MaxGroupPath): "error", "Source.space": "error",
	} {
		got, err := events.ParseGroupBy(in)
		if err != nil {
			got = "error"
		}
		if got != want {
			t.Errorf("ParseGroupBy(%q) = %q (%v), want %q", in, got, err, want)
		}
	}
}
