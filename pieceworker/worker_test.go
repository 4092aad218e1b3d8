package pieceworker_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/carcheck"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/internal/testutil/rawserve"
	"github.com/ferry-dev/ferry/internal/urlpolicy"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/pieceworker"
	"github.com/nats-io/nats.go/jetstream"
)

// local lets workers fetch from the tests' servers on 127.0.0.1.
var local = carcheck.FetchOptions{Policy: urlpolicy.New(urlpolicy.Config{AllowPrivate: true})}

// outcomes counts the car.piece and car.invalid events in the input log.
func outcomes(t *testing.T, js jetstream.JetStream) (pieces map[string][]string, invalid map[string]string) {
	t.Helper()
	pieces, invalid = map[string][]string{}, map[string]string{}
	err := jetlog.Tail(context.Background(), js, jetlog.StreamIn, 1, false, func(e jetlog.Entry) error {
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
		if err := pieceworker.Enqueue(ctx, nt.JS, jetlog.DefaultSubjects, c.Event(srv.URL, false)); err != nil {
			t.Fatal(err)
		}
		// Enqueuing a waiting CAR again adds nothing.
		if err := pieceworker.Enqueue(ctx, nt.JS, jetlog.DefaultSubjects, c.Event(srv.URL, false)); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for range 2 {
		p := pieceworker.New(nt.JS, pieceworker.Config{Workers: 2, MaxSize: 1 << 20, Fetch: local})
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
	if err := pieceworker.Enqueue(context.Background(), nt.JS, jetlog.DefaultSubjects, c.Event(srv.URL, false)); err != nil {
		t.Fatal(err)
	}
	cfg := pieceworker.Config{Workers: 1, MaxSize: 1 << 20, AckWait: time.Second, Fetch: local}
	first, kill := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { pieceworker.New(nt.JS, cfg).Run(first); close(done) }()
	<-started
	kill()
	<-done
	second, stop := context.WithCancel(context.Background())
	defer stop()
	go pieceworker.New(nt.JS, cfg).Run(second)
	testutil.Eventually(t, 20*time.Second, "the second worker to finish the CAR", func() bool {
		pieces, _ := outcomes(t, nt.JS)
		return len(pieces[c.CID.String()]) > 0
	})
	pieces, _ := outcomes(t, nt.JS)
	if got := pieces[c.CID.String()]; len(got) != 1 || got[0] != c.Piece.MustV2().String() || calls.Load() != 2 {
		t.Fatalf("pieces %v after %d downloads", got, calls.Load())
	}
}

// TestWorkersFetchOnlyWhatTheFetchPolicyAllows: work items (as a forged
// one on the work queue, or an event's URLs, would) name a file, a real
// CAR server on loopback, the metadata service and the other forms of a
// private target. With the default configuration none is fetched, each
// CAR is rejected at once, and the reason says what the policy refused.
func TestWorkersFetchOnlyWhatTheFetchPolicyAllows(t *testing.T) {
	nt := testutil.StartNATS(t)
	good := testutil.MakeCAR(t, 40, 20000)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.Write(good.Bytes)
	}))
	t.Cleanup(srv.Close)
	hostPort := srv.Listener.Addr().String()
	port := hostPort[strings.LastIndexByte(hostPort, ':')+1:]
	const hint = ", refused by the fetch policy (--fetch-allow-private)"
	tests := []struct{ url, reason string }{
		{"file:///etc/passwd", `urls[0]: scheme "file" is not http or https, refused by the fetch policy`},
		{srv.URL + "/x.car", "urls[0]: 127.0.0.1 is a loopback address" + hint},
		{"http://[::1]:" + port + "/x.car", "urls[0]: ::1 is a loopback address" + hint},
		{"http://2130706433:" + port + "/x.car", `urls[0]: host "2130706433" is not a canonical IP address, refused by the fetch policy`},
		{"http://169.254.169.254/latest/meta-data/", "urls[0]: 169.254.169.254 is a link-local address" + hint},
		{"http://user:hunter2@" + hostPort + "/x.car", "urls[0]: userinfo (user@ or user:password@) in the URL, refused by the fetch policy"},
		{"gopher://" + hostPort + "/_INFO", `urls[0]: scheme "gopher" is not http or https, refused by the fetch policy`},
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cars := map[string]string{}
	for i, tt := range tests {
		c := testutil.MakeCAR(t, uint64(50+i), 20000)
		ev := c.Event(srv.URL, false)
		ev.URLs = []string{tt.url}
		if err := pieceworker.Enqueue(ctx, nt.JS, jetlog.DefaultSubjects, ev); err != nil {
			t.Fatal(err)
		}
		cars[c.CID.String()] = tt.reason
	}
	// One delivery, a short timeout: a worker that tried these URLs would
	// give up on them at once rather than wait through retries.
	cfg := pieceworker.Config{Workers: 2, MaxSize: 1 << 20, MaxDeliver: 1, Fetch: carcheck.FetchOptions{Timeout: 3 * time.Second}}
	go pieceworker.New(nt.JS, cfg).Run(ctx)
	testutil.Eventually(t, 30*time.Second, "an outcome for every CAR", func() bool {
		pieces, invalid := outcomes(t, nt.JS)
		return len(pieces)+len(invalid) == len(cars)
	})
	pieces, invalid := outcomes(t, nt.JS)
	if len(pieces) != 0 {
		t.Fatalf("pieces computed: %v", pieces)
	}
	for car, want := range cars {
		if got := invalid[car]; got != want {
			t.Errorf("CAR %s: reason %q, want %q", car, got, want)
		}
	}
	if hits.Load() != 0 {
		t.Fatalf("the CAR server on loopback was reached %d times", hits.Load())
	}
}

// TestAllowedFetchesReportNothingTheSourceSent: with --fetch-allow-private
// a worker fetches from loopback; a CAR there gets its piece, and a
// service there that is not HTTP gets a reason that quotes none of its
// bytes.
func TestAllowedFetchesReportNothingTheSourceSent(t *testing.T) {
	nt := testutil.StartNATS(t)
	good := testutil.MakeCAR(t, 60, 20000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(good.Bytes) }))
	t.Cleanup(srv.Close)
	service := rawserve.Start(t, "SSH-2.0-OpenSSH_9.6 hunter2\r\n")
	banner := testutil.MakeCAR(t, 61, 20000)
	bev := banner.Event(strings.TrimSuffix(service, "/x.car"), false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, ev := range []*events.CarReplicated{good.Event(srv.URL, false), bev} {
		if err := pieceworker.Enqueue(ctx, nt.JS, jetlog.DefaultSubjects, ev); err != nil {
			t.Fatal(err)
		}
	}
	cfg := pieceworker.Config{Workers: 2, MaxSize: 1 << 20, MaxDeliver: 1, Fetch: local}
	go pieceworker.New(nt.JS, cfg).Run(ctx)
	testutil.Eventually(t, 30*time.Second, "an outcome for both CARs", func() bool {
		pieces, invalid := outcomes(t, nt.JS)
		return len(pieces)+len(invalid) == 2
	})
	pieces, invalid := outcomes(t, nt.JS)
	if got := pieces[good.CID.String()]; len(got) != 1 || got[0] != good.Piece.MustV2().String() {
		t.Fatalf("the CAR on loopback: pieces %v", got)
	}
	if got, want := invalid[banner.CID.String()], "gave up after 1 attempts: urls[0]: no valid HTTP response"; got != want {
		t.Fatalf("the service that is not HTTP: reason %q, want %q", got, want)
	}
}
