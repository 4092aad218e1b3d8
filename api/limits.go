package api

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// Defaults of Limits.
const (
	// DefaultBodyMinRate is the slowest average a write's body may arrive
	// at once its grace has passed: 1 KiB/s, twice Apache's
	// mod_reqtimeout default, far below any working link.
	DefaultBodyMinRate = 1 << 10
	// DefaultBodyGrace is how long a body may take before the rate counts,
	// and the longest it may stall between two reads.
	DefaultBodyGrace = 10 * time.Second
)

// Limits bound how slowly a write's body may arrive, so that a slow or
// stalled client cannot hold a write slot for long. Zero fields take the
// defaults.
type Limits struct {
	// BodyMinRate is in bytes per second, averaged from the request's start.
	BodyMinRate int
	// BodyGrace is the time a body has before BodyMinRate applies, and the
	// longest it may send nothing.
	BodyGrace time.Duration
}

func (l Limits) withDefaults() Limits {
	if l.BodyMinRate <= 0 {
		l.BodyMinRate = DefaultBodyMinRate
	}
	if l.BodyGrace <= 0 {
		l.BodyGrace = DefaultBodyGrace
	}
	return l
}

// ErrSlowBody is the error reading a body gives once it has arrived
// slower than Limits allow; the API answers it with 408.
var ErrSlowBody = errors.New("request body too slow")

// paced wraps r's body in the read deadlines of l: by the time t after the
// request started, a body must have sent at least rate*(t-grace) bytes,
// and it may never send nothing for longer than grace. The deadline is
// the connection's (http.ResponseController), so a client that sends
// nothing is cut when it is due, not when its next byte comes.
func (l Limits) paced(w http.ResponseWriter, r *http.Request) io.ReadCloser {
	return &pacedBody{body: r.Body, rc: http.NewResponseController(w), start: time.Now(), lim: l}
}

type pacedBody struct {
	body  io.ReadCloser
	rc    *http.ResponseController
	start time.Time
	lim   Limits
	got   int64
}

func (b *pacedBody) Read(p []byte) (int, error) {
	now := time.Now()
	owed := time.Duration(float64(b.got) / float64(b.lim.BodyMinRate) * float64(time.Second))
	deadline := b.start.Add(b.lim.BodyGrace + owed)
	if stall := now.Add(b.lim.BodyGrace); stall.Before(deadline) {
		deadline = stall
	}
	// A ResponseWriter that cannot set deadlines (a test recorder) reads
	// without them.
	_ = b.rc.SetReadDeadline(deadline)
	n, err := b.body.Read(p)
	b.got += int64(n)
	switch {
	case err == io.EOF:
		// The server reads on in the background to notice a client that
		// goes away; a deadline left set would cancel the request's
		// context while it publishes.
		_ = b.rc.SetReadDeadline(time.Time{})
	case errors.Is(err, os.ErrDeadlineExceeded):
		err = fmt.Errorf("%w: %d bytes in %s, less than %d bytes/s after the first %s",
			ErrSlowBody, b.got, time.Since(b.start).Round(time.Millisecond), b.lim.BodyMinRate, b.lim.BodyGrace)
	}
	return n, err
}

func (b *pacedBody) Close() error { return b.body.Close() }

// limit serves h with one of slots, and answers 429 when all are taken:
// a flood of writes gets a clear answer and bounded memory, not a queue.
// The body is paced (Limits), so a slow client holds its slot for a
// bounded time. Producers' writes and the deal engine's reports have
// separate slots: neither can starve the other.
func (a *API) limit(slots chan struct{}, what string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
			r.Body = a.Limits.withDefaults().paced(w, r)
			h(w, r)
		default:
			// Answer at once and close: left to itself the server would
			// read the unread body before answering, for as long as a slow
			// client takes; the deadline bounds the read after the answer.
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(a.Limits.withDefaults().BodyGrace))
			w.Header().Set("Connection", "close")
			w.Header().Set("Retry-After", "1")
			writeErr(w, http.StatusTooManyRequests, fmt.Sprintf("%d %s in flight; retry shortly", cap(slots), what))
		}
	}
}

// readBody reads a write's body, at most max bytes. When that fails it
// answers (413 too large, 408 too slow, 400 otherwise) and returns false.
func readBody(w http.ResponseWriter, r *http.Request, max int64) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	var tooLarge *http.MaxBytesError
	switch {
	case err == nil:
		return body, true
	case errors.As(err, &tooLarge):
		writeErr(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", max))
	case errors.Is(err, ErrSlowBody):
		w.Header().Set("Connection", "close")
		writeErr(w, http.StatusRequestTimeout, err.Error())
	default:
		writeErr(w, http.StatusBadRequest, "reading the body: "+err.Error())
	}
	return nil, false
}
