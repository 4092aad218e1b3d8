package bench

import (
	"context"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ferry-dev/ferry/api"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/projections"
)

// BenchmarkStatusHandler is the status API's server side alone, in this
// process and without the network: GET /v1/cars/{cid} through
// api.API's handler on read models of -ferry.cars CARs, CIDs drawn
// at random. ns/op is the CPU of one request on one core; it is the figure
// to compare fixes to the handler or the store with (benchstat, -count
// 10), since it barely moves with other load on the machine, unlike
// BenchmarkServe's req/s.
func BenchmarkStatusHandler(b *testing.B) {
	n := *flagCars
	f := fleetOf(b, n)
	h := (&api.API{Store: readModels(b, f, n), DealSize: *flagDeal, Log: quietLog()}).Handler()
	rng := rand.New(rand.NewPCG(5, uint64(n)))
	var bytes int
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		req := httptest.NewRequest(http.MethodGet, "/v1/cars/"+f.car(rng.IntN(n)), nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("GET: %d %s", rec.Code, rec.Body)
		}
		bytes += rec.Body.Len()
	}
	b.ReportMetric(float64(bytes)/float64(b.N), "bytes/op")
}

var (
	storeMu    sync.Mutex
	storeCache = map[int]*projections.Store{}
	storeDirs  []string // removed by TestMain
)

// TestMain removes the read models readModels kept for the whole process.
func TestMain(m *testing.M) {
	code := m.Run()
	for n, s := range storeCache {
		s.Close()
		delete(storeCache, n)
	}
	for _, dir := range storeDirs {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

// readModels returns read models of the first n CARs of f, built once per
// process (a benchmark function runs several times) in a directory that
// lives as long as the process: the aggregator appends their log on a
// server of its own, a projector replays it, the server stops.
func readModels(b *testing.B, f *fleet, n int) *projections.Store {
	b.Helper()
	storeMu.Lock()
	defer storeMu.Unlock()
	if s, ok := storeCache[n]; ok {
		return s
	}
	dir, err := os.MkdirTemp("", "ferry-bench-views")
	if err != nil {
		b.Fatal(err)
	}
	storeDirs = append(storeDirs, dir)
	nt := testutil.StartNATSIn(b, filepath.Join(dir, "jetstream"))
	defer nt.Stop()
	aggregateLog(b, nt, f, n)
	store, err := projections.Open(filepath.Join(dir, "views.db"), *flagDeal)
	if err != nil {
		b.Fatal(err)
	}
	if err := projections.NewProjector(nt.JS, store, quietLog()).Run(context.Background(), false); err != nil {
		b.Fatal(err)
	}
	storeCache[n] = store
	return store
}
