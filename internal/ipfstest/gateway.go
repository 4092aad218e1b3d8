package ipfstest

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ipfs/boxo/gateway"
	blocks "github.com/ipfs/go-block-format"
	"github.com/multiformats/go-varint"
)

// Gateway is boxo's Trustless Gateway over a Store, on 127.0.0.1:0.
// Its fault knobs act on the response bytes and may be changed between
// requests.
type Gateway struct {
	URL string // base URL, e.g. http://127.0.0.1:34567
	srv *httptest.Server

	stallAfter atomic.Int64 // >0: stop sending after this many bytes
	mu         sync.Mutex
	extra      blocks.Block // appended after the CAR when set
	// Requests counts the requests served.
	Requests atomic.Int64
	stalled  chan struct{}
	once     sync.Once
}

// NewGateway serves s as a Trustless Gateway (GET /ipfs/{cid}?format=car,
// raw blocks) until the test ends.
func NewGateway(t testing.TB, s *Store) *Gateway {
	t.Helper()
	backend, err := gateway.NewBlocksBackend(s.Service)
	if err != nil {
		t.Fatalf("ipfstest: gateway backend: %v", err)
	}
	h := gateway.NewHandler(gateway.Config{DisableHTMLErrors: true, NoDNSLink: true}, backend)
	g := &Gateway{stalled: make(chan struct{})}
	g.srv = httptest.NewServer(g.faults(h))
	g.URL = g.srv.URL
	t.Cleanup(g.Close)
	return g
}

// Close releases stalled responses and stops the server.
func (g *Gateway) Close() {
	g.once.Do(func() { close(g.stalled) })
	g.srv.CloseClientConnections()
	g.srv.Close()
}

// StallAfter makes every later response stop sending after n bytes of
// body and hold the connection open until the client gives up (n = 0
// turns it off).
func (g *Gateway) StallAfter(n int64) { g.stallAfter.Store(n) }

// AppendBlock makes every later CAR response carry b as one more section
// after the DAG: an extraneous block (nil turns it off).
func (g *Gateway) AppendBlock(b blocks.Block) {
	g.mu.Lock()
	g.extra = b
	g.mu.Unlock()
}

func (g *Gateway) faults(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.Requests.Add(1)
		g.mu.Lock()
		extra := g.extra
		g.mu.Unlock()
		fw := &faultWriter{ResponseWriter: w, stallAfter: g.stallAfter.Load(), ctx: r.Context(), release: g.stalled}
		h.ServeHTTP(fw, r)
		if extra != nil && fw.status == http.StatusOK {
			fw.Write(Section(extra))
		}
		if fw.stallAfter > 0 && !fw.stalledNow {
			// The body was shorter than the stall point: stall at its end.
			fw.stall()
		}
	})
}

// Section is the CARv1 section of b: varint length, CID, bytes.
func Section(b blocks.Block) []byte {
	c := b.Cid().Bytes()
	out := varint.ToUvarint(uint64(len(c) + len(b.RawData())))
	out = append(out, c...)
	return append(out, b.RawData()...)
}

// faultWriter passes a response through, stalling at a byte count.
type faultWriter struct {
	http.ResponseWriter
	status     int
	written    int64
	stallAfter int64
	stalledNow bool
	ctx        context.Context
	release    chan struct{}
}

func (w *faultWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *faultWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.stalledNow {
		return 0, context.Canceled
	}
	if w.stallAfter > 0 && w.written+int64(len(p)) >= w.stallAfter {
		n, _ := w.ResponseWriter.Write(p[:w.stallAfter-w.written])
		w.written += int64(n)
		w.stall()
		return n, context.Canceled
	}
	n, err := w.ResponseWriter.Write(p)
	w.written += int64(n)
	return n, err
}

// stall flushes what was written and waits for the client to leave.
func (w *faultWriter) stall() {
	w.stalledNow = true
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	select {
	case <-w.ctx.Done():
	case <-w.release:
	}
}

func (w *faultWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok && !w.stalledNow {
		f.Flush()
	}
}

// RefusedURL returns an http URL on loopback where nothing listens: a
// connection to it is refused.
func RefusedURL(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}
