package worker_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/piece/worker"
	"github.com/nats-io/nats.go/jetstream"
)

// outcomes counts the car.piece and car.invalid events in the input log.
func outcomes(t *testing.T, js jetstream.JetStream) (pieces map[string][]string, invalid map[string]string) {
	t.Helper()
	pieces, invalid = map[string][]string{}, map[string]string{}
	err := events.Tail(context.Background(), js, events.StreamIn, 1, false, func(e events.Entry) error {
		ev, err := events.Decode(e.Data)
		if err != nil {
			return err
		}
		switch ev := ev.(type) {
		case *events.CarPiece:
			pieces[ev.Car] = append(pieces[ev.Car], ev.Piece)
		case *events.CarInvalid:
			invalid[ev.Car] = ev.Reason
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pieces, invalid
}

func TestTwoPoolsShareTheQueueAndNeverBothFinishACar(t *testing.T) {
	nt := testutil.StartNATS(t)
	cars := map[string]testutil.CAR{}
	var served sync.Map
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/"), ".car")
		n, _ := served.LoadOrStore(name, new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
		w.Write(cars[name].Bytes)
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 30 {
		c := testutil.MakeCAR(t, uint64(i), 5000+i*1000)
		cars[c.CID.String()] = c
		if err := worker.Enqueue(ctx, nt.JS, events.DefaultSubjects, c.Event(srv.URL, false)); err != nil {
			t.Fatal(err)
		}
		// Enqueuing a waiting CAR again adds nothing.
		if err := worker.Enqueue(ctx, nt.JS, events.DefaultSubjects, c.Event(srv.URL, false)); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for range 2 {
		p := worker.New(nt.JS, worker.Config{Workers: 2, MaxSize: 1 << 20})
		wg.Go(func() { p.Run(ctx) })
	}
	testutil.Eventually(t, 30*time.Second, "a piece for every CAR", func() bool {
		pieces, _ := outcomes(t, nt.JS)
		return len(pieces) == len(cars)
	})
	cancel()
	wg.Wait()
	pieces, invalid := outcomes(t, nt.JS)
	for car, c := range cars {
		if got := pieces[car]; len(got) != 1 || got[0] != c.Piece.MustV2().String() {
			t.Fatalf("CAR %s: pieces %v, want exactly [%s]", car, got, c.Piece.MustV2())
		}
		if n, _ := served.Load(car); n.(*atomic.Int32).Load() != 1 {
			t.Fatalf("CAR %s downloaded %d times", car, n.(*atomic.Int32).Load())
		}
	}
	if len(invalid) != 0 {
		t.Fatalf("invalid: %v", invalid)
	}
}

func TestAWorkerKilledMidDownloadLeavesTheCarToAnother(t *testing.T) {
	nt := testutil.StartNATS(t)
	c := testutil.MakeCAR(t, 7, 200000)
	var calls atomic.Int32
	started := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.Write(c.Bytes[:1000])
			w.(http.Flusher).Flush()
			close(started)
			<-r.Context().Done() // the first worker dies mid-download
			return
		}
		w.Write(c.Bytes)
	}))
	t.Cleanup(srv.Close)
	if err := worker.Enqueue(context.Background(), nt.JS, events.DefaultSubjects, c.Event(srv.URL, false)); err != nil {
		t.Fatal(err)
	}
	cfg := worker.Config{Workers: 1, MaxSize: 1 << 20, AckWait: time.Second}
	first, kill := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { worker.New(nt.JS, cfg).Run(first); close(done) }()
	<-started
	kill()
	<-done
	second, stop := context.WithCancel(context.Background())
	defer stop()
	go worker.New(nt.JS, cfg).Run(second)
	testutil.Eventually(t, 20*time.Second, "the second worker to finish the CAR", func() bool {
		pieces, _ := outcomes(t, nt.JS)
		return len(pieces[c.CID.String()]) > 0
	})
	pieces, _ := outcomes(t, nt.JS)
	if got := pieces[c.CID.String()]; len(got) != 1 || got[0] != c.Piece.MustV2().String() || calls.Load() != 2 {
		t.Fatalf("pieces %v after %d downloads", got, calls.Load())
	}
}
