package spade

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/piece"
)

func TestSimulatorPublishesDealsForAGoodOffer(t *testing.T) {
	f := newFixture(t, SimConfig{Replicas: 2})
	o := f.offer(t, 7, f.layout())
	if err := f.offerer.Offer(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	rep := f.nextReport(t)
	if got, want := rep.Status, events.StatusPublished; got != want {
		t.Fatalf("status = %q (reason %q), want %q", got, rep.Reason, want)
	}
	if got, want := rep.Aggregate, o.Piece; got != want {
		t.Fatalf("aggregate = %s, want %s", got, want)
	}
	if got, want := len(rep.Deals), 2; got != want {
		t.Fatalf("%d deals, want %d", got, want)
	}
	if rep.Deals[0].Provider == rep.Deals[1].Provider {
		t.Fatalf("both replicas with provider %s", rep.Deals[0].Provider)
	}
	for _, d := range rep.Deals {
		if d.DealID == 0 || d.ExpirationEpoch <= epochAt(time.Now()) {
			t.Fatalf("deal %+v: want an id and a future expiration", d)
		}
	}
	waitReported(t, f.sim, o.Piece)
	for _, secret := range []string{offerToken, reportToken} {
		if strings.Contains(f.logs.String(), secret) {
			t.Fatalf("the log shows a token:\n%s", f.logs.String())
		}
	}
}

// waitReported waits until the simulator records the report as delivered.
func waitReported(t *testing.T, s *Simulator, pieceCID string) OfferOutcome {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, o := range s.Offers() {
			if o.Piece == pieceCID && o.Reported {
				return o
			}
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("report of %s not delivered: %+v", pieceCID, s.Offers())
	return OfferOutcome{}
}

func TestSimulatorChecksWithoutAssemblingAboveMaxAssemble(t *testing.T) {
	f := newFixture(t, SimConfig{MaxAssemble: testDealSize / 2})
	if err := f.offerer.Offer(t.Context(), f.offer(t, 1, f.layout())); err != nil {
		t.Fatal(err)
	}
	if rep := f.nextReport(t); rep.Status != events.StatusPublished {
		t.Fatalf("status = %q (%s), want published", rep.Status, rep.Reason)
	}
	if !strings.Contains(f.logs.String(), "instead of assembling") {
		t.Fatal("the log does not say the bytes were not assembled")
	}
}

func TestSimulatorReportsWhatIsWrongWithAnOffer(t *testing.T) {
	tests := []struct {
		name      string
		config    SimConfig
		tamper    func(f *fixture, t *testing.T) *Offer
		wantInLog string
		want      string
	}{
		{
			name: "a CAR whose piece is not the one offered fails with a piece mismatch",
			tamper: func(f *fixture, t *testing.T) *Offer {
				cars := f.layout()
				cars[1].Piece = randomPiece(1, cars[1].Piece.Padded, cars[1].Piece.Payload)
				return f.offer(t, 1, cars)
			},
			want: "piece mismatch",
		},
		{
			name: "a CAR whose md5 is not the one offered fails with an md5 mismatch",
			tamper: func(f *fixture, t *testing.T) *Offer {
				o := f.offer(t, 1, f.layout())
				o.Pieces[2].MD5 = strings.Repeat("0", 32)
				return o
			},
			want: "md5 mismatch",
		},
		{
			name: "a URL serving another CAR fails with a size mismatch",
			tamper: func(f *fixture, t *testing.T) *Offer {
				o := f.offer(t, 1, f.layout())
				o.Pieces[3].URLs = o.Pieces[0].URLs
				return o
			},
			want: "size mismatch",
		},
		{
			name: "a wrong aggregate piece fails with an aggregate piece mismatch",
			tamper: func(f *fixture, t *testing.T) *Offer {
				return withAggregate(f.offer(t, 1, f.layout()), randomPiece(2, testDealSize, piece.Unpadded(testDealSize)))
			},
			want: "aggregate piece mismatch",
		},
		{
			name:   "a wrong aggregate piece is caught without assembling too",
			config: SimConfig{MaxAssemble: 1 << 10},
			tamper: func(f *fixture, t *testing.T) *Offer {
				return withAggregate(f.offer(t, 1, f.layout()), randomPiece(3, testDealSize, piece.Unpadded(testDealSize)))
			},
			want: "aggregate piece mismatch",
		},
		{
			name: "a piece moved away from where the index puts it fails with an offset mismatch",
			tamper: func(f *fixture, t *testing.T) *Offer {
				o := f.offer(t, 1, f.layout())
				o.Pieces[3].Offset += 4 * o.Pieces[3].PieceSize
				return o
			},
			want: "offset mismatch: pieces[3]",
		},
		{
			name: "a source answering 404 fails with a download error",
			tamper: func(f *fixture, t *testing.T) *Offer {
				o := f.offer(t, 1, f.layout())
				o.Pieces[0].URLs = []string{f.carSrv.URL + "/missing.car"}
				return o
			},
			want: "download failed: " + "http://",
		},
		{
			name:   "a failure rate of 1 fails a good offer as a simulated failure",
			config: SimConfig{FailureRate: 1},
			tamper: func(f *fixture, t *testing.T) *Offer { return f.offer(t, 1, f.layout()) },
			want:   "simulated failure",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.config)
			o := tt.tamper(f, t)
			want := tt.want
			if want == "piece mismatch" {
				want = "pieces[1] (car " + o.Pieces[1].Car + "): piece mismatch: the bytes have piece " + f.layout()[1].Piece.MustV2().String()
			}
			if err := f.offerer.Offer(t.Context(), o); err != nil {
				t.Fatal(err)
			}
			rep := f.nextReport(t)
			if rep.Status != events.StatusFailed || !strings.Contains(rep.Reason, want) {
				t.Fatalf("report %q %q, want failed with %q", rep.Status, rep.Reason, want)
			}
			if len(rep.Deals) != 0 {
				t.Fatalf("a failed offer made deals: %+v", rep.Deals)
			}
		})
	}
}

// withAggregate replaces the offer's aggregate piece, keeping it valid.
func withAggregate(o *Offer, c piece.Commitment) *Offer {
	o.Piece, o.PieceV1 = c.MustV2().String(), c.V1().String()
	o.Manifest = ManifestOf(o)
	return o
}

func TestSimulatorTreatsARepeatOfferAsTheSameOffer(t *testing.T) {
	f := newFixture(t, SimConfig{})
	o := f.offer(t, 1, f.layout())
	if err := f.offerer.Offer(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	first := f.nextReport(t)
	if err := f.offerer.Offer(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	again := f.nextReport(t)
	if again.Status != events.StatusPublished || len(again.Deals) != 1 || again.Deals[0] != first.Deals[0] {
		t.Fatalf("repeat got %+v, want the first report's deals %+v", again, first.Deals)
	}
	offers := f.sim.Offers()
	if got, want := len(offers), 1; got != want {
		t.Fatalf("%d offers recorded, want %d", got, want)
	}
	if got, want := offers[0].Offers, 2; got != want {
		t.Fatalf("offers counted %d, want %d", got, want)
	}
	if got := f.sim.Oracle().ActiveReplicas; len(got) != 1 || len(got[0].Contracts) != 1 {
		t.Fatalf("oracle %+v, want one replica with one deal", got)
	}
}

func TestSimulatorRetriesAFailedPieceOnARepeatOffer(t *testing.T) {
	f := newFixture(t, SimConfig{})
	o := f.offer(t, 1, f.layout())
	good := o.Pieces[0].URLs
	o.Pieces[0].URLs = []string{f.carSrv.URL + "/not-yet.car"}
	if err := f.offerer.Offer(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	if rep := f.nextReport(t); rep.Status != events.StatusFailed {
		t.Fatalf("status %q, want failed", rep.Status)
	}
	o.Pieces[0].URLs = good
	if err := f.offerer.Offer(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	if rep := f.nextReport(t); rep.Status != events.StatusPublished {
		t.Fatalf("status %q (%s), want published", rep.Status, rep.Reason)
	}
}

func TestSimulatorOracleListsTheDealsMade(t *testing.T) {
	f := newFixture(t, SimConfig{})
	o := f.offer(t, 1, f.layout())
	if err := f.offerer.Offer(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	rep := f.nextReport(t)
	for _, path := range []string{"/oracle", "/oracle.zst"} {
		poller := &OraclePoller{URL: f.simSrv.URL + path}
		got, err := poller.Poll(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].Aggregate != o.PieceV1 || got[0].Status != events.StatusActive {
			t.Fatalf("%s: reports %+v, want one active report for %s", path, got, o.PieceV1)
		}
		if d := got[0].Deals; len(d) != 1 || d[0] != rep.Deals[0] {
			t.Fatalf("%s: deals %+v, want %+v", path, d, rep.Deals)
		}
		if again, err := poller.Poll(t.Context()); err != nil || len(again) != 0 {
			t.Fatalf("%s: second poll %+v, %v: want nothing new", path, again, err)
		}
	}
	if got, want := f.sim.Oracle().ActiveReplicas[0].PieceLog2Size, 20; got != want {
		t.Fatalf("piece_log2_size %d, want %d", got, want)
	}
}

func TestSimulatorRefusesOffersItCannotTake(t *testing.T) {
	f := newFixture(t, SimConfig{MaxDealSize: testDealSize / 2})
	o := f.offer(t, 1, f.layout())
	tests := []struct {
		name   string
		token  string
		offer  *Offer
		status int
		want   string
	}{
		{"an offer without the bearer token is refused", "", o, http.StatusUnauthorized, "bearer token"},
		{"an offer with the wrong bearer token is refused", "guess", o, http.StatusUnauthorized, "bearer token"},
		{"a deal larger than the engine takes is refused", offerToken, o, http.StatusBadRequest, "outside this engine's range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			off := &Offerer{URL: f.simSrv.URL + "/offers", Token: tt.token, Backoff: fastBackoff}
			err := off.Offer(t.Context(), tt.offer)
			refused, ok := errors.AsType[*RefusedError](err)
			if !ok || refused.Status != tt.status || !strings.Contains(refused.Reason, tt.want) {
				t.Fatalf("err = %v, want refusal %d with %q", err, tt.status, tt.want)
			}
		})
	}
	f.noReport(t, 20*time.Millisecond)
}

func TestSimulatorRefusesMalformedJSON(t *testing.T) {
	f := newFixture(t, SimConfig{AcceptToken: ""})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, f.simSrv.URL+"/offers", strings.NewReader(`{"aggregate":`))
	req.Header.Set("Authorization", "Bearer "+offerToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var answer struct{ Error string }
	json.NewDecoder(resp.Body).Decode(&answer)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(answer.Error, "not JSON") {
		t.Fatalf("answer %d %q, want 400 not JSON", resp.StatusCode, answer.Error)
	}
}

func TestSimulatorListsOffersAndOutcomes(t *testing.T) {
	f := newFixture(t, SimConfig{})
	o := f.offer(t, 9, f.layout())
	if err := f.offerer.Offer(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	f.nextReport(t)
	waitReported(t, f.sim, o.Piece)
	resp, err := http.Get(f.simSrv.URL + "/offers")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list []OfferOutcome
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Aggregate != 9 || list[0].Status != events.StatusPublished || !list[0].Reported {
		t.Fatalf("GET /offers = %+v, want aggregate 9 published and reported", list)
	}
}

func TestSimulatorCloseEndsItsGoroutines(t *testing.T) {
	f := newFixture(t, SimConfig{Delay: time.Hour})
	if err := f.offerer.Offer(t.Context(), f.offer(t, 1, f.layout())); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { f.sim.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return while a report was waiting out its delay")
	}
	err := f.offerer.Offer(context.Background(), f.offer(t, 2, f.layout()[:2]))
	if err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("offer to a closed simulator: %v, want a closed error", err)
	}
}

func TestSimulatorFailureDrawsRepeat(t *testing.T) {
	a := &Simulator{cfg: SimConfig{FailureRate: 0.5, Seed: 42}}
	b := &Simulator{cfg: SimConfig{FailureRate: 0.5, Seed: 42}}
	fails := 0
	for run := 1; run <= 200; run++ {
		x, y := a.simulatedFailure("bafkzcib-piece", run), b.simulatedFailure("bafkzcib-piece", run)
		if x != y {
			t.Fatalf("run %d: draws differ with the same seed", run)
		}
		if x {
			fails++
		}
	}
	if fails < 60 || fails > 140 {
		t.Fatalf("%d of 200 failed at rate 0.5", fails)
	}
}

func TestNewSimulatorRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  SimConfig
		want string
	}{
		{"a failure rate above 1 is rejected", SimConfig{FailureRate: 1.5}, "failure rate"},
		{"a provider that is not an f0 address is rejected", SimConfig{Providers: []string{"bob"}}, "not an f0 address"},
		{"a min deal size above the max is rejected", SimConfig{MinDealSize: 2 << 20, MaxDealSize: 1 << 20}, "above max"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewSimulator(tt.cfg)
			if err == nil {
				s.Close()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
