package spade

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// stubEngine answers offers with the given statuses in turn (the last one
// repeating) and counts them; it checks the bearer token.
func stubEngine(t *testing.T, statuses ...int) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(calls.Add(1))
		if got := r.Header.Get("Authorization"); got != "Bearer "+offerToken {
			writeError(w, http.StatusUnauthorized, "token "+got)
			return
		}
		var o Offer
		if err := json.NewDecoder(r.Body).Decode(&o); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		status := statuses[min(n, len(statuses))-1]
		if status >= 300 {
			writeError(w, status, "engine says no to "+o.Piece)
			return
		}
		writeJSON(w, status, map[string]bool{"accepted": true})
	}))
	t.Cleanup(srv.Close)
	return srv, &calls
}

func TestOffererRetriesTransientFailures(t *testing.T) {
	f := newFixture(t, SimConfig{})
	srv, calls := stubEngine(t, http.StatusServiceUnavailable, http.StatusServiceUnavailable, http.StatusAccepted)
	off := &Offerer{URL: srv.URL, Token: offerToken, Backoff: fastBackoff, MaxAttempts: 5}
	if err := off.Offer(t.Context(), f.offer(t, 1, f.layout())); err != nil {
		t.Fatal(err)
	}
	if got, want := calls.Load(), int32(3); got != want {
		t.Fatalf("%d attempts, want %d", got, want)
	}
}

func TestOffererGivesUpAfterMaxAttempts(t *testing.T) {
	f := newFixture(t, SimConfig{})
	srv, calls := stubEngine(t, http.StatusBadGateway)
	off := &Offerer{URL: srv.URL, Token: offerToken, Backoff: fastBackoff, MaxAttempts: 3}
	err := off.Offer(t.Context(), f.offer(t, 1, f.layout()))
	if se, ok := errors.AsType[*StatusError](err); !ok || se.Status != http.StatusBadGateway {
		t.Fatalf("err = %v, want the last 502", err)
	}
	if got, want := calls.Load(), int32(3); got != want {
		t.Fatalf("%d attempts, want %d", got, want)
	}
}

func TestOffererDoesNotRetryARefusal(t *testing.T) {
	f := newFixture(t, SimConfig{})
	srv, calls := stubEngine(t, http.StatusBadRequest, http.StatusAccepted)
	off := &Offerer{URL: srv.URL, Token: offerToken, Backoff: fastBackoff, MaxAttempts: 5}
	o := f.offer(t, 1, f.layout())
	err := off.Offer(t.Context(), o)
	refused, ok := errors.AsType[*RefusedError](err)
	if !ok || refused.Status != http.StatusBadRequest || refused.Reason != "engine says no to "+o.Piece {
		t.Fatalf("err = %v, want a 400 refusal with the engine's reason", err)
	}
	if !errors.Is(err, ErrRefused) {
		t.Fatal("a refusal does not match ErrRefused")
	}
	if got, want := calls.Load(), int32(1); got != want {
		t.Fatalf("%d attempts, want %d", got, want)
	}
}

func TestOffererRetriesRateLimits(t *testing.T) {
	f := newFixture(t, SimConfig{})
	srv, calls := stubEngine(t, http.StatusTooManyRequests, http.StatusOK)
	off := &Offerer{URL: srv.URL, Token: offerToken, Backoff: fastBackoff}
	if err := off.Offer(t.Context(), f.offer(t, 1, f.layout())); err != nil {
		t.Fatal(err)
	}
	if got, want := calls.Load(), int32(2); got != want {
		t.Fatalf("%d attempts, want %d", got, want)
	}
}

func TestOffererDoesNotSendABadOffer(t *testing.T) {
	f := newFixture(t, SimConfig{})
	srv, calls := stubEngine(t, http.StatusAccepted)
	off := &Offerer{URL: srv.URL, Token: offerToken, Backoff: fastBackoff}
	o := f.offer(t, 1, f.layout())
	o.ReportURL = ""
	if err := off.Offer(t.Context(), o); !errors.Is(err, ErrBadOffer) {
		t.Fatalf("err = %v, want ErrBadOffer", err)
	}
	if calls.Load() != 0 {
		t.Fatal("a bad offer was sent")
	}
}

func TestOffererWritesEachOfferToOfferDir(t *testing.T) {
	f := newFixture(t, SimConfig{})
	srv, _ := stubEngine(t, http.StatusAccepted)
	dir := filepath.Join(t.TempDir(), "offers")
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.FixedZone("CET", 3600))
	off := &Offerer{URL: srv.URL, Token: offerToken, OfferDir: dir, Backoff: fastBackoff, Now: func() time.Time { return now }}
	o := f.offer(t, 1, f.layout())
	if err := off.Offer(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "2026-11-22T11:00:00Z_"+o.Piece+".json" {
		t.Fatalf("OfferDir holds %v, want one file named for the UTC time and the piece", entries)
	}
	data, err := os.ReadFile(filepath.Join(dir, entries[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	var saved Offer
	if err := json.Unmarshal(data, &saved); err != nil || saved.Piece != o.Piece || len(saved.Pieces) != len(o.Pieces) {
		t.Fatalf("saved offer %+v, %v", saved, err)
	}
	if strings.Contains(string(data), offerToken) {
		t.Fatal("the saved offer holds the token")
	}
}

func TestOffererNeverPrintsItsToken(t *testing.T) {
	off := &Offerer{URL: "http://127.0.0.1:1/offers", Token: offerToken}
	b, _ := json.Marshal(off)
	for _, s := range []string{off.String(), string(b)} {
		if strings.Contains(s, offerToken) {
			t.Fatalf("%q shows the token", s)
		}
	}
	f := newFixture(t, SimConfig{})
	off.Backoff, off.MaxAttempts = fastBackoff, 2
	err := off.Offer(t.Context(), f.offer(t, 1, f.layout()))
	if err == nil || strings.Contains(err.Error(), offerToken) {
		t.Fatalf("err = %v: want a failure that does not show the token", err)
	}
}

func TestBackoffDoublesUpToItsMax(t *testing.T) {
	b := Backoff{First: 10 * time.Millisecond, Max: 50 * time.Millisecond}
	for n, want := range map[int]time.Duration{1: 10 * time.Millisecond, 2: 20 * time.Millisecond, 3: 40 * time.Millisecond, 4: 50 * time.Millisecond, 60: 50 * time.Millisecond} {
		if got := b.Delay(n); got != want {
			t.Fatalf("Delay(%d) = %v, want %v", n, got, want)
		}
	}
	if got, want := (Backoff{}).Delay(1), DefaultBackoff.First; got != want {
		t.Fatalf("zero Backoff Delay(1) = %v, want %v", got, want)
	}
}
