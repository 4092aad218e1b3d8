package dashboard

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/wire"
)

func TestRateIsOverTheLastMinute(t *testing.T) {
	var r rate
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := r.now(t0, 100); got.PerMinute != 0 || got.Span != 0 {
		t.Fatalf("one sample: %+v, want no rate", got)
	}
	// 10 CARs every 5 s for two minutes: 120 a minute, measured over
	// about a minute, not from the first sample.
	var got rateNow
	for i := 1; i <= 24; i++ {
		got = r.now(t0.Add(time.Duration(i)*5*time.Second), 100+uint64(10*i))
	}
	if got.PerMinute != 120 {
		t.Fatalf("rate %v, want 120", got.PerMinute)
	}
	if got.Span < time.Minute || got.Span > time.Minute+sampleEvery {
		t.Fatalf("span %v, want about a minute", got.Span)
	}
}

func TestFieldsKeepTheJSONOrderAndEveryField(t *testing.T) {
	off := uint64(7)
	v := wire.CarView{Car: "bagb", State: "QUEUED", Size: 5, URLs: []string{"http://x"}, Offset: &off, Reason: "why"}
	fs, err := fields(&v, "urls")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range fs {
		names = append(names, f.Name)
	}
	// The view's own JSON is the independent list: every member but the
	// skipped one, in order.
	data, _ := json.Marshal(&v)
	dec := json.NewDecoder(bytes.NewReader(data))
	var want []string
	dec.Token()
	for dec.More() {
		k, _ := dec.Token()
		var skip json.RawMessage
		_ = dec.Decode(&skip)
		if k != "urls" {
			want = append(want, k.(string))
		}
	}
	if !slices.Equal(names, want) {
		t.Fatalf("fields %v, want %v", names, want)
	}
	if fs[len(fs)-1].Value != "why" || fs[0].Value != "bagb" {
		t.Fatalf("strings are shown unquoted: %+v", fs)
	}
}
