package spade

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// maxAnswer bounds how much of an answer body is read: answers are short
// JSON objects, and a misbehaving server must not make us buffer a file.
const maxAnswer = 64 << 10

// Backoff is the schedule of waits between attempts: First after the first
// failure, doubling after each further one, never more than Max. There is
// no jitter: the schedule is deterministic so tests and operators can
// predict the next attempt, and ferry has one dealer, not a herd.
type Backoff struct {
	First time.Duration
	Max   time.Duration
}

// DefaultBackoff is used where a Backoff is left zero.
var DefaultBackoff = Backoff{First: time.Second, Max: time.Minute}

// Delay is the wait after the n-th failed attempt (n ≥ 1).
func (b Backoff) Delay(n int) time.Duration {
	if b.First <= 0 {
		b.First = DefaultBackoff.First
	}
	if b.Max <= 0 {
		b.Max = max(b.First, DefaultBackoff.Max)
	}
	d := b.First
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// retry calls f up to attempts times, waiting on b between failures. It
// stops early on success, on a RefusedError (permanent) and when ctx ends,
// and returns the last error. onRetry, if set, hears about every failure
// that will be retried.
func retry(ctx context.Context, b Backoff, attempts int, onRetry func(attempt int, err error, wait time.Duration), f func() error) error {
	var err error
	for n := 1; ; n++ {
		if err = f(); err == nil || errors.Is(err, ErrRefused) || n >= attempts || ctx.Err() != nil {
			return err
		}
		wait := b.Delay(n)
		if onRetry != nil {
			onRetry(n, err, wait)
		}
		if werr := sleep(ctx, wait); werr != nil {
			return fmt.Errorf("%w (last error: %v)", werr, err)
		}
	}
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// postJSON POSTs body with a bearer token and turns the answer into nil
// (2xx), a *RefusedError (4xx but 408/429) or a transient error.
func postJSON(ctx context.Context, client *http.Client, url, token string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	return classify(resp.StatusCode, answer)
}

// classify maps a status and answer body to the contract's three outcomes.
func classify(status int, answer []byte) error {
	switch {
	case status >= 200 && status < 300:
		return nil
	case status == http.StatusRequestTimeout, status == http.StatusTooManyRequests, status >= 500:
		return &StatusError{Status: status, Reason: reasonOf(answer)}
	}
	return &RefusedError{Status: status, Reason: reasonOf(answer)}
}

// reasonOf is the "error" of a JSON answer, else its trimmed text.
func reasonOf(answer []byte) string {
	var a struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(answer, &a) == nil && a.Error != "" {
		return a.Error
	}
	s := strings.TrimSpace(string(answer))
	if len(s) > 512 {
		s = s[:512] + "…"
	}
	if s == "" {
		return "no reason given"
	}
	return s
}

// bearerOK reports whether r carries the token; an empty token admits all.
// The comparison takes the same time however much of the token matches.
func bearerOK(r *http.Request, token string) bool {
	if token == "" {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, reason string) {
	writeJSON(w, status, map[string]string{"error": reason})
}

// discard is the logger of components given none.
var discard = slog.New(slog.DiscardHandler)

func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return discard
	}
	return l
}
