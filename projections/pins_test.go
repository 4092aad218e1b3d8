package projections

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
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

// TestTheStatusIndexAgreesWithEveryRequest applies a random run of pin
// events to a few CIDs and, after each, holds every listing by status (the
// index and its counts) to what reading each live request says.
func TestTheStatusIndexAgreesWithEveryRequest(t *testing.T) {
	s, err := OpenPins(filepath.Join(t.TempDir(), "pins.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cids := []string{
		"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
		"bafkreiaqb7hpwyurjcclbnxfkzmqdfduh5qg6dxlbbvvn4g5auwsvabzxq",
		"bafkreidrdmucwdh2fiyodyxwjldrmlo4nhohdgbwkpp4yy7wxqyqcjrsd4",
	}
	rng := rand.New(rand.NewPCG(7, 17))
	t0 := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	var live []string
	for i := range 300 {
		var ev events.Event
		cid := cids[rng.IntN(len(cids))]
		at := t0.Add(time.Duration(rng.IntN(50)) * time.Second) // equal times happen
		switch k := rng.IntN(10); {
		case k < 4 || len(live) == 0:
			id := fmt.Sprintf("r%03d", i)
			ev = &events.PinRequested{RequestID: id, CID: cid, Name: []string{"a", "b"}[i%2], Created: at}
			live = append(live, id)
		case k < 6:
			j := rng.IntN(len(live))
			ev = &events.PinCancelled{RequestID: live[j], At: at}
			live = append(live[:j], live[j+1:]...)
		case k < 7:
			ev = &events.PinFetching{CID: cid, Attempt: 1, At: at}
		case k < 8:
			ev = &events.PinFetched{CID: cid, Car: "bagcar", At: at}
		default:
			ev = &events.PinFailed{CID: cid, Reason: "gave up", At: at}
		}
		if _, err := s.Apply(uint64(i+1), ev); err != nil {
			t.Fatal(err)
		}
		byStatus := map[string][]Pin{}
		for _, id := range live {
			p, err := s.Pin(id)
			if err != nil {
				t.Fatalf("step %d: live request %s: %v", i, id, err)
			}
			byStatus[p.Fetch.Status] = append(byStatus[p.Fetch.Status], p)
		}
		for _, st := range []string{PinQueued, PinPinning, PinPinned, PinFailed} {
			want := byStatus[st]
			slices.SortFunc(want, func(a, b Pin) int {
				if c := b.Created.Compare(a.Created); c != 0 {
					return c
				}
				return strings.Compare(b.RequestID, a.RequestID)
			})
			got, n, err := s.Pins(PinQuery{Statuses: []string{st}, Limit: 1000})
			if err != nil || n != len(want) || len(got) != len(want) {
				t.Fatalf("step %d (%s): %s: %d listed, count %d, want %d (%v)", i, ev.Kind(), st, len(got), n, len(want), err)
			}
			for j := range got {
				if got[j].RequestID != want[j].RequestID {
					t.Fatalf("step %d: %s: order %v differs from %v at %d", i, st, got[j].RequestID, want[j].RequestID, j)
				}
			}
			// The filtered walk (the name) counts the same way.
			named, nn, _ := s.Pins(PinQuery{Statuses: []string{st}, Name: "a", Limit: 1})
			wantNamed := 0
			for _, p := range want {
				if p.Name == "a" {
					wantNamed++
				}
			}
			if nn != wantNamed || len(named) != min(1, wantNamed) {
				t.Fatalf("step %d: %s named a: count %d, want %d", i, st, nn, wantNamed)
			}
		}
		if _, n, _ := s.Pins(PinQuery{Limit: 1}); n != len(live) {
			t.Fatalf("step %d: every status counts %d, %d live", i, n, len(live))
		}
	}
}
