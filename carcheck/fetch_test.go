package carcheck

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/internal/urlpolicy"
)

// serve starts a 127.0.0.1 server for the test's lifetime.
func serve(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL + "/x.car"
}

func serveBytes(t *testing.T, data []byte) string {
	return serve(t, func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "x.car", time.Time{}, bytes.NewReader(data))
	})
}

func serveStatus(t *testing.T, code int) string {
	return serve(t, func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", code) })
}

// serveStalling sends the first half of data, then nothing until the
// client goes away or the test ends.
func serveStalling(t *testing.T, data []byte, beforeHeaders bool) string {
	release := make(chan struct{})
	u := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if !beforeHeaders {
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			w.Write(data[:len(data)/2])
			w.(http.Flusher).Flush()
		}
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	return u
}

// local lets the tests' servers on 127.0.0.1 through the fetch policy.
var local = urlpolicy.New(urlpolicy.Config{AllowPrivate: true})

func TestFetchAndCheckMovesOnToTheNextSource(t *testing.T) {
	data := makeCAR(t, 10, 1<<20)
	bad := bytes.Clone(data)
	bad[len(bad)-1] ^= 1
	want := commpOf(t, data)
	fast := FetchOptions{StallTimeout: 300 * time.Millisecond, Policy: local}
	tests := []struct {
		name     string
		urls     []string
		attempts int // failed attempts before the good one
	}{
		{"a 404 then a good server: the second is used", []string{serveStatus(t, 404), serveBytes(t, data)}, 1},
		{"a 500 and a refused connection then a good server", []string{serveStatus(t, 500), "http://127.0.0.1:1/x.car", serveBytes(t, data)}, 2},
		{"a corrupt replica then a good one: the good one is used", []string{serveBytes(t, bad), serveBytes(t, data)}, 1},
		{"a server that stalls mid-body is abandoned after the stall timeout", []string{serveStalling(t, data, false), serveBytes(t, data)}, 1},
		{"a server that stalls before its headers is abandoned too", []string{serveStalling(t, data, true), serveBytes(t, data)}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			res, err := FetchAndCheck(context.Background(), tt.urls, fast, CheckOptions{ExpectSize: uint64(len(data))})
			if err != nil {
				t.Fatal(err)
			}
			if res.Commitment != want {
				t.Fatalf("commitment %+v, want %+v", res.Commitment, want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("took %s", d)
			}
		})
	}
}

func TestFetchReportsEveryAttempt(t *testing.T) {
	data := makeCAR(t, 11, 100<<10)
	bad := bytes.Clone(data)
	bad[len(bad)-1] ^= 1
	urls := []string{serveStatus(t, 404), serveStalling(t, data, false), serveBytes(t, bad)}
	start := time.Now()
	_, err := FetchAndCheck(context.Background(), urls, FetchOptions{StallTimeout: 200 * time.Millisecond, Policy: local}, CheckOptions{})
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %s", d)
	}
	var fe *FetchError
	if !errors.As(err, &fe) {
		t.Fatalf("err %v, want a FetchError", err)
	}
	if got, want := len(fe.Attempts), 3; got != want {
		t.Fatalf("%d attempts, want %d: %v", got, want, err)
	}
	var status *StatusError
	if !errors.As(fe.Attempts[0].Err, &status) || status.Code != 404 {
		t.Fatalf("first attempt: %v, want a 404", fe.Attempts[0].Err)
	}
	if !errors.Is(fe.Attempts[1].Err, ErrStalled) {
		t.Fatalf("second attempt: %v, want a stall", fe.Attempts[1].Err)
	}
	if !errors.Is(fe.Last(), ErrBlockMismatch) {
		t.Fatalf("last attempt: %v, want bad bytes", fe.Last())
	}
	if fe.Invalid() {
		t.Fatal("Invalid() with I/O failures among the attempts")
	}
	for _, u := range urls {
		if !strings.Contains(err.Error(), u) {
			t.Fatalf("error %q does not name %s", err, u)
		}
	}
}

func TestFetchSaysWhenEverySourceIsBad(t *testing.T) {
	data := makeCAR(t, 12, 100<<10)
	bad := bytes.Clone(data)
	bad[len(bad)-1] ^= 1
	_, err := FetchAndCheck(context.Background(), []string{serveBytes(t, bad), serveBytes(t, bad)}, FetchOptions{Policy: local}, CheckOptions{})
	var fe *FetchError
	if !errors.As(err, &fe) || !fe.Invalid() || !IsInvalid(err) {
		t.Fatalf("err %v, want every attempt invalid", err)
	}
}

func TestFetchRejectsAWrongAnnouncedSizeUnread(t *testing.T) {
	data := makeCAR(t, 13, 100<<10)
	// The server stalls after half the body: reading it would take the
	// minute of stall timeout.
	start := time.Now()
	_, err := FetchAndCheck(context.Background(), []string{serveStalling(t, data, false)},
		FetchOptions{StallTimeout: time.Minute, Policy: local}, CheckOptions{ExpectSize: 5})
	if !errors.Is(err, ErrSizeMismatch) || !strings.Contains(err.Error(), "announced size") {
		t.Fatalf("err %v, want a size mismatch from Content-Length", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %s: the body was read", d)
	}
}

func TestFetchStopsAtTheTotalTimeout(t *testing.T) {
	data := makeCAR(t, 14, 100<<10)
	urls := []string{serveStalling(t, data, false), serveBytes(t, data)}
	start := time.Now()
	err := Fetch(context.Background(), urls, FetchOptions{Timeout: 300 * time.Millisecond, StallTimeout: time.Minute, Policy: local},
		func(r io.Reader, _ int64) error { _, err := io.Copy(io.Discard, r); return err })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want the deadline", err)
	}
	var fe *FetchError
	if !errors.As(err, &fe) || len(fe.Attempts) != 1 || fe.Sources != 2 {
		t.Fatalf("err %v, want one attempt of two", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %s", d)
	}
}

func TestFetchRefusesWhatItCannotFetch(t *testing.T) {
	if err := Fetch(context.Background(), nil, FetchOptions{}, nil); !errors.Is(err, ErrNoURLs) {
		t.Fatalf("no URLs: err %v", err)
	}
	for u, want := range map[string]error{
		"ftp://example.com/x.car":   urlpolicy.ErrRefused,
		"file:///etc/passwd":        urlpolicy.ErrRefused,
		"file://host.example/x.car": urlpolicy.ErrRefused,
		"::bad":                     ErrUnsupportedURL,
	} {
		err := Fetch(context.Background(), []string{u}, FetchOptions{Policy: local}, func(io.Reader, int64) error { return nil })
		if !errors.Is(err, want) {
			t.Fatalf("%s: err %v, want %v", u, err, want)
		}
	}
}
