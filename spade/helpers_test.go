package spade

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/frc58"
	"github.com/ferry-dev/ferry/piece"
	"github.com/ferry-dev/ferry/wire"
	commp "github.com/filecoin-project/go-fil-commp-hashhash"
	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	"github.com/ipld/go-car/v2/storage"
	"github.com/multiformats/go-multihash"
)

// testDealSize is small so the simulator assembles whole deals quickly.
const testDealSize = 1 << 20

const (
	offerToken  = "offer-secret-token"
	reportToken = "report-secret-token"
)

// fastBackoff keeps retry tests in milliseconds.
var fastBackoff = Backoff{First: time.Millisecond, Max: 4 * time.Millisecond}

// testCar is a CAR written to disk with what a producer would publish.
type testCar struct {
	Name  string
	CID   cid.Cid
	Size  uint64
	MD5   string
	Piece piece.Commitment
}

// writeCar writes a CARv1 of raw blocks of deterministic random bytes,
// about size bytes, into dir and returns its description. The piece
// commitment is computed here with commp directly, not with the code
// under test.
func writeCar(t *testing.T, dir string, seed uint64, size int) testCar {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed))
	var blocks [][]byte
	for left := size; left > 0; left -= 8 << 10 {
		b := make([]byte, min(left, 8<<10))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		blocks = append(blocks, b)
	}
	cids := make([]cid.Cid, len(blocks))
	for i, b := range blocks {
		mh, err := multihash.Sum(b, multihash.SHA2_256, -1)
		if err != nil {
			t.Fatal(err)
		}
		cids[i] = cid.NewCidV1(cid.Raw, mh)
	}
	var buf bytes.Buffer
	w, err := storage.NewWritable(&buf, cids[:1], carv2.WriteAsCarV1(true))
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range blocks {
		if err := w.Put(context.Background(), cids[i].KeyString(), b); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Finalize(); err != nil {
		t.Fatal(err)
	}
	return saveCar(t, dir, buf.Bytes())
}

func saveCar(t *testing.T, dir string, data []byte) testCar {
	t.Helper()
	mh, _ := multihash.Sum(data, multihash.SHA2_256, -1)
	c := cid.NewCidV1(0x0202, mh) // the CAR multicodec: the CID of the file itself
	name := c.String() + ".car"
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := md5.Sum(data)
	var cp commp.Calc
	cp.Write(data)
	root, padded, err := cp.Digest()
	if err != nil {
		t.Fatal(err)
	}
	pc := piece.Commitment{Padded: padded, Payload: uint64(len(data))}
	copy(pc.Root[:], root)
	return testCar{Name: name, CID: c, Size: uint64(len(data)), MD5: hex.EncodeToString(sum[:]), Piece: pc}
}

// fixture is a simulator, a CAR server and a ferry stand-in receiving
// reports, all on loopback.
type fixture struct {
	dir     string
	cars    []testCar
	carSrv  *httptest.Server
	reports chan *events.DealReport
	rptSrv  *httptest.Server
	sim     *Simulator
	simSrv  *httptest.Server
	offerer *Offerer
	logs    *syncBuffer
}

// newFixture starts everything; cfg's zero fields get test values.
func newFixture(t *testing.T, cfg SimConfig) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), reports: make(chan *events.DealReport, 16), logs: &syncBuffer{}}
	for i, size := range []int{150 << 10, 90 << 10, 40 << 10, 30 << 10} {
		f.cars = append(f.cars, writeCar(t, f.dir, uint64(i+1), size))
	}
	f.carSrv = httptest.NewServer(http.FileServer(http.Dir(f.dir)))
	t.Cleanup(f.carSrv.Close)
	f.rptSrv = httptest.NewServer(http.HandlerFunc(f.receiveReport))
	t.Cleanup(f.rptSrv.Close)

	cfg.ReportToken, cfg.AcceptToken = reportToken, offerToken
	cfg.Delay = cmpOr(cfg.Delay, 5*time.Millisecond)
	cfg.ReportBackoff = fastBackoff
	cfg.TempDir = t.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(f.logs, t.Output()), nil))
	sim, err := NewSimulator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.sim = sim
	f.simSrv = httptest.NewServer(sim.Handler())
	t.Cleanup(f.simSrv.Close)
	t.Cleanup(func() { sim.Close() }) // runs first: no report is posted to a closed server
	f.offerer = &Offerer{URL: f.simSrv.URL + "/offers", Token: offerToken, Backoff: fastBackoff, MaxAttempts: 3}
	return f
}

// receiveReport is ferry's POST /v1/deals/report, reduced to the contract.
func (f *fixture) receiveReport(w http.ResponseWriter, r *http.Request) {
	if !bearerOK(r, reportToken) || r.Header.Get("Authorization") == "" {
		writeError(w, http.StatusUnauthorized, "wrong token")
		return
	}
	body, _ := io.ReadAll(r.Body)
	rep, err := ParseReport(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	f.reports <- rep
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

// layout returns the fixture's CARs in ferry's layout order.
func (f *fixture) layout() []testCar { return inLayout(f.cars) }

// inLayout returns cars in ferry's layout order.
func inLayout(cars []testCar) []testCar {
	padded := make([]uint64, len(cars))
	for i, c := range cars {
		padded[i] = c.Piece.Padded
	}
	var out []testCar
	for _, i := range frc58.Layout(padded) {
		out = append(out, cars[i])
	}
	return out
}

// offer builds the offer of cars (in layout order) as ferry does: the
// layout is computed here with frc58 directly, as the aggregator fixes it
// and the read models keep it, and OfferOf builds the offer from it.
func (f *fixture) offer(t *testing.T, id uint64, cars []testCar) *Offer {
	t.Helper()
	agg, views := f.views(t, id, cars)
	o := OfferOf(agg, views, f.rptSrv.URL+"/v1/deals/report")
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	return o
}

// views are the read models' views of aggregate id holding cars, READY,
// in layout order: what projections.Store.Layout returns.
func (f *fixture) views(t *testing.T, id uint64, cars []testCar) (*wire.AggregateView, []wire.CarView) {
	t.Helper()
	pieces := make([]piece.Commitment, len(cars))
	for i, c := range cars {
		pieces[i] = c.Piece
	}
	agg, err := frc58.New(testDealSize, pieces)
	if err != nil {
		t.Fatal(err)
	}
	c := agg.Commitment()
	a := &wire.AggregateView{ID: id, State: aggregator.Ready, Piece: c.MustV2().String(), PieceV1: c.V1().String(),
		PieceSize: agg.DealSize, DealSize: agg.DealSize, Count: len(cars)}
	offsets := agg.Offsets()
	views := make([]wire.CarView, len(cars))
	for i, car := range cars {
		views[i] = wire.CarView{Car: car.CID.String(), State: aggregator.Ready, Size: car.Size, MD5: car.MD5,
			URLs: []string{f.carSrv.URL + "/" + car.Name}, Piece: car.Piece.MustV2().String(),
			PieceSize: car.Piece.Padded, Aggregate: id, Offset: &offsets[i]}
	}
	return a, views
}

// nextReport waits for the next report ferry receives.
func (f *fixture) nextReport(t *testing.T) *events.DealReport {
	t.Helper()
	select {
	case rep := <-f.reports:
		return rep
	case <-time.After(20 * time.Second):
		t.Fatal("no report within 20s")
		return nil
	}
}

// noReport asserts that no report arrives for a while.
func (f *fixture) noReport(t *testing.T, wait time.Duration) {
	t.Helper()
	select {
	case rep := <-f.reports:
		t.Fatalf("unexpected report %+v", rep)
	case <-time.After(wait):
	}
}

// syncBuffer is a bytes.Buffer safe for the simulator's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// randomPiece is a made-up commitment of the given sizes.
func randomPiece(seed uint64, padded, payload uint64) piece.Commitment {
	rng := rand.New(rand.NewPCG(seed, 99))
	c := piece.Commitment{Padded: padded, Payload: payload}
	for i := range c.Root {
		c.Root[i] = byte(rng.Uint32())
	}
	c.Root[31] &= 0x3f // a field element, as real commitments are
	return c
}
