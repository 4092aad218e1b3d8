package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The hand-written client must read every framing net/http's server
// writes, keep the connection across answers, and turn a non-200 or a
// closed connection into an error, not a figure.
func TestRawConnReadsNetHTTPAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/length/abc":
			w.Header().Set("Content-Length", "5")
			w.Write([]byte("hello"))
		case "/chunked/abc":
			// two flushed writes: chunked framing
			w.Write(bytes.Repeat([]byte("a"), 3000))
			w.(http.Flusher).Flush()
			w.Write(bytes.Repeat([]byte("b"), 4000))
		case "/close/abc":
			w.Header().Set("Connection", "close")
			w.Write([]byte("bye"))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	addr, host, path, err := target(srv.URL + "/length/")
	if err != nil {
		t.Fatal(err)
	}
	if path != "/length/" || host != addr {
		t.Fatalf("target: %q %q %q", addr, host, path)
	}
	c := &rawConn{addr: addr, host: host}
	defer c.close()
	for range 3 {
		if n, err := c.get("/length/abc"); err != nil || n != 5 {
			t.Fatalf("length: %d %v", n, err)
		}
	}
	first := c.conn
	if n, err := c.get("/chunked/abc"); err != nil || n != 7000 {
		t.Fatalf("chunked: %d %v", n, err)
	}
	if c.conn != first {
		t.Fatal("connection not kept across answers")
	}
	if _, err := c.get("/missing/abc"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("404: %v", err)
	}
	if n, err := c.get("/close/abc"); err != nil || n != 3 || c.conn != nil {
		t.Fatalf("close: %d %v, conn %v", n, err, c.conn)
	}
	if n, err := c.get("/length/abc"); err != nil || n != 5 {
		t.Fatalf("after close: %d %v", n, err)
	}
}

// The open loop offers the rate asked for, whatever the answers' speed:
// over d at rate r it sends r×d requests and no more.
func TestOpenLoopOffersTheRate(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "2")
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	ids := filepath.Join(t.TempDir(), "ids")
	if err := os.WriteFile(ids, []byte("a\nb\nc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run([]string{"get", "-url", srv.URL + "/x/", "-ids", ids, "-c", "4", "-d", "1s", "-warmup", "0s", "-rate", "500"}, nil, &out); err != nil {
		t.Fatal(err)
	}
	var r Result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if r.Requests != 500 || r.Errors != 0 || r.Rate != 500 || r.MeanBytes != 2 {
		t.Fatalf("open loop: %+v", r)
	}
	if r.Seconds < 0.99 || r.Seconds > 6 {
		t.Fatalf("open loop took %.3f s", r.Seconds)
	}
}

// A server that stops answering fails the request at the timeout instead
// of hanging the run.
func TestRawConnTimesOut(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	defer srv.Close()
	defer close(release)
	addr, host, _, err := target(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	c := &rawConn{addr: addr, host: host, timeout: 200 * time.Millisecond}
	defer c.close()
	start := time.Now()
	_, err = c.get("/stall")
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("stalled answer: %v, want a timeout", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("timeout of 200ms took %s", took)
	}
	if c.conn != nil {
		t.Fatal("connection kept after a timeout")
	}
}
