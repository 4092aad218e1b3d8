package spade

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/projections"
)

// readModels are real read models fed by the real fold, as ferry's
// projector feeds them from the aggregate log.
type readModels struct {
	t       *testing.T
	f       *fixture
	fold    *aggregator.State
	store   *projections.Store
	seq     uint64
	entries []projections.LoggedBatch
	applied int
}

func (f *fixture) newReadModels(t *testing.T) *readModels {
	t.Helper()
	s, err := projections.Open(filepath.Join(t.TempDir(), "views.db"), testDealSize)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	fold := aggregator.New(events.Settings{DealSize: testDealSize, MinPayload: testDealSize, MaxWait: 1 << 62})
	return &readModels{t: t, f: f, fold: fold, store: s}
}

// in folds one input event.
func (r *readModels) in(ev events.Event) {
	r.seq++
	if b := r.fold.Apply(r.seq, testutil.MustEncode(ev)); len(b.Decisions) > 0 {
		r.entries = append(r.entries, projections.LoggedBatch{Seq: uint64(len(r.entries) + 1), Batch: b})
	}
}

// aggregate folds cars into the next aggregate and, with close, an
// operator's order that closes it (READY).
func (r *readModels) aggregate(id uint64, cars []testCar, close bool) {
	for _, c := range cars {
		r.in(&events.CarReplicated{Car: c.CID.String(), Size: c.Size, MD5: c.MD5,
			URLs: []string{r.f.carSrv.URL + "/" + c.Name}, Piece: c.Piece.MustV2().String()})
	}
	if close {
		r.in(&events.AggregateClose{Aggregate: id, By: "test"})
	}
}

// read applies what was folded since the last read and returns the store.
func (r *readModels) read() *projections.Store {
	r.t.Helper()
	if err := r.store.Apply(r.entries[r.applied:]); err != nil {
		r.t.Fatal(err)
	}
	r.applied = len(r.entries)
	return r.store
}

// TestOffersAndManifestsAreBuiltFromTheReadModels: the offer read from
// the read models of a real fold is the offer built from the layout
// frc58 computes, the manifest read for the manifest route is that
// offer's manifest, and neither is read for an aggregate the fold has not
// closed (or, for the offer, no longer holds READY).
func TestOffersAndManifestsAreBuiltFromTheReadModels(t *testing.T) {
	f := newFixture(t, SimConfig{})
	rm := f.newReadModels(t)
	rm.aggregate(1, f.cars[:3], true)
	rm.aggregate(2, f.cars[3:], false)
	s := rm.read()
	reportURL := f.rptSrv.URL + "/v1/deals/report"

	got, err := ReadOffer(s, 1, reportURL)
	if err != nil {
		t.Fatal(err)
	}
	want := f.offer(t, 1, inLayout(f.cars[:3]))
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("offer read from the read models:\n%+v\nwant the offer of the frc58 layout:\n%+v", got, want)
	}
	for _, ref := range []string{"1", want.Piece, want.PieceV1} {
		m, err := ReadManifest(s, ref)
		if err != nil {
			t.Fatalf("manifest of %s: %v", ref, err)
		}
		if !reflect.DeepEqual(*m, want.Manifest) {
			t.Fatalf("manifest of %s: %+v, want the offer's %+v", ref, m, want.Manifest)
		}
	}

	if _, err := ReadOffer(s, 2, reportURL); !errors.Is(err, projections.ErrNotFound) {
		t.Fatalf("offer of the INGESTING aggregate: %v, want ErrNotFound", err)
	}
	if _, err := ReadManifest(s, "2"); !errors.Is(err, projections.ErrNotFound) || !strings.Contains(err.Error(), "layout is not fixed") {
		t.Fatalf("manifest of the INGESTING aggregate: %v, want ErrNotFound saying the layout is not fixed", err)
	}

	rm.in(&events.DealOffered{Aggregate: 1, Piece: want.Piece})
	s = rm.read()
	if _, err := ReadOffer(s, 1, reportURL); err == nil || !strings.Contains(err.Error(), "is DEAL_PENDING, not READY") {
		t.Fatalf("offer of a DEAL_PENDING aggregate: %v, want an error naming its state", err)
	}
	if m, err := ReadManifest(s, "1"); err != nil || !reflect.DeepEqual(*m, want.Manifest) {
		t.Fatalf("manifest of a DEAL_PENDING aggregate: %+v, %v; want the offer's", m, err)
	}
}
