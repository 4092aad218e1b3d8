package projections

import (
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/events"
)

// TestThePinsReadModelEventByEvent applies pin events one at a time and
// checks each request's status and what the hooks are told.
func TestThePinsReadModelEventByEvent(t *testing.T) {
	s, err := OpenPins(filepath.Join(t.TempDir(), "pins.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const a = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
	const b = "bafkreiaqb7hpwyurjcclbnxfkzmqdfduh5qg6dxlbbvvn4g5auwsvabzxq"
	t0 := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	var seq uint64
	apply := func(ev events.Event) []effect {
		t.Helper()
		seq++
		eff, err := s.Apply(seq, ev)
		if err != nil {
			t.Fatal(err)
		}
		return eff
	}
	req := func(id, cid string, at int) *events.PinRequested {
		return &events.PinRequested{RequestID: id, CID: cid, Created: t0.Add(time.Duration(at) * time.Second)}
	}
	status := func(id string) string {
		t.Helper()
		p, err := s.Pin(id)
		if err != nil {
			t.Fatalf("pin %s: %v", id, err)
		}
		return p.Fetch.Status
	}
	wants := func(eff []effect) []string {
		var out []string
		for _, e := range eff {
			if e.want != nil {
				out = append(out, "want "+e.want.CID)
			}
			if e.unwanted != "" {
				out = append(out, "unwant "+e.unwanted)
			}
		}
		return out
	}
	same := func(what string, got, want []string) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: hooks %v, want %v", what, got, want)
		}
	}

	same("first request", wants(apply(req("r1", a, 1))), []string{"want " + a})
	same("second request of the CID", wants(apply(req("r2", a, 2))), nil)
	if status("r1") != PinQueued || status("r2") != PinQueued {
		t.Fatalf("requested: %s %s", status("r1"), status("r2"))
	}
	apply(&events.PinFetching{CID: a, Attempt: 1, At: t0})
	if status("r2") != PinPinning {
		t.Fatalf("fetching: %s", status("r2"))
	}
	apply(&events.PinFetched{CID: a, Car: "bagcar", Piece: "bafkpiece", URL: "http://x/cars/bagcar.car", At: t0})
	p, _ := s.Pin("r1")
	if p.Fetch.Status != PinPinned || p.Fetch.Car != "bagcar" {
		t.Fatalf("fetched: %+v", p.Fetch)
	}
	same("a request of a pinned CID", wants(apply(req("r3", a, 3))), nil)
	if status("r3") != PinPinned {
		t.Fatalf("a request of a pinned CID is %s", status("r3"))
	}
	same("cancelling a pinned CID's request", wants(apply(&events.PinCancelled{RequestID: "r1", At: t0})), nil)
	if _, err := s.Pin("r1"); err != ErrNotFound {
		t.Fatalf("a cancelled request: %v", err)
	}

	// b: requested, cancelled before it is fetched, requested again.
	same("b requested", wants(apply(req("r4", b, 4))), []string{"want " + b})
	same("b's last request cancelled", wants(apply(&events.PinCancelled{RequestID: "r4", At: t0})), []string{"unwant " + b})
	if w, _ := s.Wanted(); len(w) != 0 {
		t.Fatalf("wanted after the cancellation: %+v", w)
	}
	same("b requested again", wants(apply(req("r5", b, 5))), []string{"want " + b})
	apply(&events.PinFailed{CID: b, Reason: "not found at any source", At: t0})
	if p, _ := s.Pin("r5"); p.Fetch.Status != PinFailed || p.Fetch.Reason != "not found at any source" {
		t.Fatalf("failed: %+v", p.Fetch)
	}
	same("a request of a failed CID", wants(apply(req("r6", b, 6))), []string{"want " + b})
	if w, _ := s.Wanted(); len(w) != 1 || w[0].CID != b || !w[0].Since.Equal(t0.Add(6*time.Second)) {
		t.Fatalf("wanted: %+v", w)
	}
	// A replacement cancels the replaced request in the same event.
	r7 := req("r7", a, 7)
	r7.Replaces = "r2"
	apply(r7)
	if _, err := s.Pin("r2"); err != ErrNotFound || status("r7") != PinPinned {
		t.Fatalf("replace: r2 %v, r7 %s", err, status("r7"))
	}
	// A redelivered event changes nothing.
	if eff, err := s.Apply(seq, req("r8", a, 8)); err != nil || eff != nil {
		t.Fatalf("an event at an applied sequence: %v %v", eff, err)
	}
	if _, err := s.Pin("r8"); err != ErrNotFound {
		t.Fatalf("a skipped event was applied: %v", err)
	}

	// Listing: newest first, counted, filtered.
	all, n, err := s.Pins(PinQuery{Limit: 10})
	if err != nil || n != 4 {
		t.Fatalf("list: %d %v", n, err)
	}
	var ids []string
	for _, p := range all {
		ids = append(ids, p.RequestID)
	}
	same("newest first", ids, []string{"r7", "r6", "r5", "r3"})
	if got, n, _ := s.Pins(PinQuery{Limit: 1, Statuses: []string{PinPinned}}); n != 2 || len(got) != 1 || got[0].RequestID != "r7" {
		t.Fatalf("pinned, limit 1: %d %+v", n, got)
	}
	if got, n, _ := s.Pins(PinQuery{Limit: 10, CIDs: []string{b}, After: t0.Add(5 * time.Second)}); n != 1 || got[0].RequestID != "r6" {
		t.Fatalf("cid b after 5s: %d %+v", n, got)
	}
}
