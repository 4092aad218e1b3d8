package node

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/client"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/pieceworker"
)

func TestCarsWithoutPiecesGetThemAndBadCarsAreRejected(t *testing.T) {
	nt := testutil.StartNATS(t)
	dir := t.TempDir()
	cfg := testConfig(t.TempDir(), nt.URL())
	cfg.CarStore = dir
	cfg.Pieces.Workers = 2
	cfg.Pieces.MaxDeliver = 2
	cfg.Pieces.Backoff = []time.Duration{100 * time.Millisecond}
	cfg.Fold.VerifyPieces = true
	n := startNode(t, cfg)
	base := "http://" + n.HTTPAddr() + "/cars"
	pub := jetlog.NewPublisher(nt.JS, jetlog.DefaultSubjects)
	ctx := context.Background()

	var good []testutil.CAR
	for i := range 12 {
		c := testutil.MakeCAR(t, uint64(500+i), 3000+i*5000)
		c.WriteTo(t, dir)
		good = append(good, c)
		// Half arrive with a claimed (correct) piece, verified anyway.
		if _, err := pub.Publish(ctx, c.Event(base, i%2 == 0)); err != nil {
			t.Fatal(err)
		}
	}
	bad := []struct {
		name   string
		mangle func(c *testutil.CAR, ev *events.CarReplicated)
		reason string
	}{
		{"truncated", func(c *testutil.CAR, ev *events.CarReplicated) {
			os.WriteFile(filepath.Join(dir, c.CID.String()+".car"), c.Bytes[:len(c.Bytes)-100], 0o644)
		}, "size"},
		{"flipped block byte", func(c *testutil.CAR, ev *events.CarReplicated) {
			b := bytes.Clone(c.Bytes)
			b[len(b)-10] ^= 0xff
			os.WriteFile(filepath.Join(dir, c.CID.String()+".car"), b, 0o644)
		}, "do not match CID"},
		{"wrong claimed piece", func(c *testutil.CAR, ev *events.CarReplicated) {
			ev.Piece = testutil.FakePiece(999, uint64(len(c.Bytes))).MustV2().String()
		}, "claimed"},
		{"missing everywhere", func(c *testutil.CAR, ev *events.CarReplicated) {
			os.Remove(filepath.Join(dir, c.CID.String()+".car"))
		}, "gave up"},
		// The node's workers trust its own /cars on loopback, and only that.
		{"on another server on loopback", func(c *testutil.CAR, ev *events.CarReplicated) {
			other := httptest.NewServer(http.FileServer(http.Dir(dir)))
			t.Cleanup(other.Close)
			ev.URLs = []string{other.URL + "/" + c.CID.String() + ".car"}
		}, "urls[0]: 127.0.0.1 is a loopback address, refused by the fetch policy (--fetch-allow-private)"},
	}
	var badCars []testutil.CAR
	for i, b := range bad {
		c := testutil.MakeCAR(t, uint64(900+i), 20000)
		c.WriteTo(t, dir)
		ev := c.Event(base, false)
		b.mangle(&c, ev)
		if _, err := pub.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
		badCars = append(badCars, c)
	}
	api := client.NewHTTP(n.HTTPAddr())
	testutil.Eventually(t, 60*time.Second, "every CAR to get its piece or a rejection", func() bool {
		for _, c := range append(append([]testutil.CAR{}, good...), badCars...) {
			v, err := api.Car(ctx, c.CID.String())
			if err != nil || v.State == aggregator.Queued {
				return false
			}
		}
		return true
	})
	for _, c := range good {
		v, _ := api.Car(ctx, c.CID.String())
		if (v.State != aggregator.Aggregating && v.State != aggregator.Ready) || v.Piece != c.Piece.MustV2().String() {
			t.Fatalf("CAR %s: %+v, want AGGREGATING with piece %s", c.CID, v, c.Piece.MustV2())
		}
	}
	for i, c := range badCars {
		v, _ := api.Car(ctx, c.CID.String())
		if v.State != aggregator.Rejected || !strings.Contains(v.Reason, bad[i].reason) {
			t.Fatalf("%s: %+v, want REJECTED mentioning %q", bad[i].name, v, bad[i].reason)
		}
	}
	// The CAR missing everywhere is on the dead-letter stream; once its
	// file is back, replaying it gets it its piece.
	missing := badCars[3]
	letters, err := pieceworker.DeadLetters(ctx, nt.JS, jetlog.DefaultSubjects, "")
	if err != nil || len(letters) != 1 || letters[0].Event.Car != missing.CID.String() || !strings.Contains(letters[0].Reason, "404") {
		t.Fatalf("dead letters %+v %v", letters, err)
	}
	missing.WriteTo(t, dir)
	if err := pieceworker.Replay(ctx, nt.JS, jetlog.DefaultSubjects, letters); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "the replayed CAR to get its piece", func() bool {
		v, err := api.Car(ctx, missing.CID.String())
		return err == nil && v.Piece == missing.Piece.MustV2().String()
	})
	good = append(good, missing)
	closeIngesting(t, n, api)
	waitIdle(t, n, nt.JS)
	for _, c := range good {
		v, _ := api.Car(ctx, c.CID.String())
		agg, _ := api.Aggregate(ctx, fmt.Sprint(v.Aggregate), -1, 0)
		verifyProof(t, v.Inclusion.CBOR, c.Piece, agg.PieceV1)
	}
}
