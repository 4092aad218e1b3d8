package carcheck

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/ferry-dev/ferry/internal/urlpolicy"
)

// DefaultStallTimeout is how long an attempt may wait for the response or
// for the next body bytes when FetchOptions.StallTimeout is zero.
const DefaultStallTimeout = 60 * time.Second

// Errors of Fetch.
var (
	// ErrNoURLs: Fetch was given no URL to try.
	ErrNoURLs = errors.New("no URLs to fetch")
	// ErrStalled: no bytes arrived for the stall timeout.
	ErrStalled = errors.New("stalled")
	// ErrUnsupportedURL: a URL that does not parse. A URL the fetch
	// policy refuses (another scheme than http or https, userinfo, a
	// private address) is a *urlpolicy.RefusedError instead.
	ErrUnsupportedURL = errors.New("unsupported URL")
)

// FetchOptions bound a Fetch.
type FetchOptions struct {
	// Timeout bounds the whole Fetch, every attempt included. Zero means
	// no bound beyond the context's.
	Timeout time.Duration
	// StallTimeout fails an attempt (and moves on to the next URL) when
	// the response headers, or the next body bytes, take longer than this.
	// Zero means DefaultStallTimeout.
	StallTimeout time.Duration
	// Policy decides which URLs and addresses may be fetched, and makes
	// the HTTP requests through its Client; nil means urlpolicy.Default,
	// which refuses loopback, private and other special addresses.
	Policy *urlpolicy.Policy
}

// StatusError is an HTTP response outside 2xx.
type StatusError struct {
	Code   int
	Status string
	// Body is the start of the answer's body (at most 512 bytes), for a
	// caller that knows the source's error format; it is never in Error,
	// since reasons quote nothing a source sent.
	Body string
}

func (e *StatusError) Error() string { return "HTTP " + e.Status }

// Attempt is one URL tried and why it failed.
type Attempt struct {
	URL string
	Err error
}

// FetchError says every URL failed; it lists each attempt in order.
// errors.Is and errors.As see every attempt's error.
type FetchError struct {
	Attempts []Attempt
	// Sources is how many URLs Fetch was given; more than len(Attempts)
	// when the context ended first.
	Sources int
}

func (e *FetchError) Error() string {
	var b strings.Builder
	switch {
	case e.Sources == 1 && len(e.Attempts) == 1:
		return fmt.Sprintf("fetch %s: %v", redact(e.Attempts[0].URL), e.Attempts[0].Err)
	case len(e.Attempts) == e.Sources:
		fmt.Fprintf(&b, "fetch: all %d sources failed", e.Sources)
	default:
		fmt.Fprintf(&b, "fetch: gave up after %d of %d sources", len(e.Attempts), e.Sources)
	}
	for i, a := range e.Attempts {
		sep := "; "
		if i == 0 {
			sep = ": "
		}
		fmt.Fprintf(&b, "%s%s: %v", sep, redact(a.URL), a.Err)
	}
	return b.String()
}

func (e *FetchError) Unwrap() []error {
	errs := make([]error, len(e.Attempts))
	for i, a := range e.Attempts {
		errs[i] = a.Err
	}
	return errs
}

// Invalid reports whether every source was tried and failed for good:
// it gave bad bytes (the content itself is bad wherever it is stored) or
// the fetch policy refused it, so fetching again will not help. It is
// false when the context ended before every source was tried.
func (e *FetchError) Invalid() bool {
	if len(e.Attempts) == 0 || len(e.Attempts) < e.Sources {
		return false
	}
	for _, a := range e.Attempts {
		if !IsInvalid(a.Err) && !errors.Is(a.Err, urlpolicy.ErrRefused) {
			return false
		}
	}
	return true
}

// Last is the last attempt's error.
func (e *FetchError) Last() error { return e.Attempts[len(e.Attempts)-1].Err }

// Bounds of Reason: how many attempts it lists, and how long the text of
// one may be.
const (
	reasonAttempts = 4
	reasonAttempt  = 240
)

// Reason says why each source failed, in words fit for a car.invalid
// event that anyone may read: sources are named by their index in the
// event's urls, since a URL may carry what its publisher would not show;
// a refusal says what the fetch policy refused; and of what a source
// answered it keeps only what ferry concluded (the HTTP status code, why
// the CAR is invalid, a stall), never the bytes or network details that
// would let a publisher probe what the worker can reach. It is at most
// about a kilobyte, however many sources there were.
func (e *FetchError) Reason() string {
	var b strings.Builder
	switch {
	case e.Sources > 1 && len(e.Attempts) == e.Sources:
		fmt.Fprintf(&b, "all %d sources failed: ", e.Sources)
	case len(e.Attempts) < e.Sources:
		fmt.Fprintf(&b, "gave up after %d of %d sources: ", len(e.Attempts), e.Sources)
	}
	for i, a := range e.Attempts {
		if i == reasonAttempts {
			fmt.Fprintf(&b, "; and %d more", len(e.Attempts)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "urls[%d]: %s", i, Clip(Describe(a.Err), reasonAttempt))
	}
	return b.String()
}

// Describe says why one fetch attempt failed, in the words of Reason.
func Describe(err error) string {
	var se *StatusError
	var dns *net.DNSError
	var op *net.OpError
	var ce *causeError
	var cve *tls.CertificateVerificationError
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrNoURLs):
		return err.Error()
	case errors.Is(err, urlpolicy.ErrRefused):
		re, _ := errors.AsType[*urlpolicy.RefusedError](err)
		return re.Error()
	case IsInvalid(err):
		ie, _ := errors.AsType[*InvalidError](err)
		return ie.Error()
	case errors.As(err, &se):
		return fmt.Sprintf("HTTP %d %s", se.Code, http.StatusText(se.Code))
	case errors.As(err, &ce):
		return ce.Error()
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "interrupted"
	case errors.Is(err, ErrUnsupportedURL):
		return "not a valid URL"
	case errors.As(err, &dns):
		return "the host name did not resolve"
	case errors.As(err, &op) && op.Op == "dial":
		return "could not connect"
	case errors.As(err, &cve):
		return "TLS certificate not valid for the host"
	}
	// Anything else came from the transfer: the source's answer was not
	// HTTP, the connection broke, TLS failed. Its text may quote what the
	// source sent, so only the fact is kept.
	return "no valid HTTP response"
}

// redact hides a URL's password in Error, which goes to logs.
func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return raw
}

// causeError is why this package ended an attempt: a stall or the Fetch
// timeout. Its text is this package's own and quotes nothing the source
// sent, so Reason keeps it whole.
type causeError struct {
	msg  string
	kind error // ErrStalled or context.DeadlineExceeded
}

func (e *causeError) Error() string { return e.msg }
func (e *causeError) Unwrap() error { return e.kind }

// Clip bounds a text to n bytes, cut at a rune boundary, marking the cut
// with "…": reasons others read are bounded with it.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// Fetch tries urls in order and calls fn with the first body that can be
// opened; size is its length, or -1 when unknown. Only http and https
// URLs are fetched, each through opts.Policy, which refuses other schemes
// and addresses ferry's own network can reach but the public cannot.
// When fn (or the transfer under it) fails, Fetch tries the next URL:
// any error counts, bad bytes included, since another copy of the same
// content may be good. It stops early only when ctx is done or the
// Timeout passes. fn must be done with body when it returns. When all
// fail Fetch returns a *FetchError; ErrNoURLs for an empty list.
func Fetch(ctx context.Context, urls []string, opts FetchOptions, fn func(body io.Reader, size int64) error) error {
	if len(urls) == 0 {
		return ErrNoURLs
	}
	if opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = WithTimeout(ctx, opts.Timeout)
		defer cancel()
	}
	f := fetcher{policy: opts.policy(), stall: opts.stall(), fn: fn}
	fe := FetchError{Sources: len(urls)}
	for _, u := range urls {
		err := f.attempt(ctx, u)
		if err == nil {
			return nil
		}
		fe.Attempts = append(fe.Attempts, Attempt{URL: u, Err: err})
		if ctx.Err() != nil {
			break
		}
	}
	return &fe
}

// FetchAndCheck fetches the first URL whose bytes pass Check. Like Fetch
// it moves on after bad bytes too, so a corrupt replica does not hide a
// good one; if every source is bad, FetchError.Invalid says so and
// FetchError.Last is the last reason.
func FetchAndCheck(ctx context.Context, urls []string, fopts FetchOptions, copts CheckOptions) (*Result, error) {
	var res *Result
	err := Fetch(ctx, urls, fopts, func(body io.Reader, size int64) error {
		if err := copts.precheck(size); err != nil {
			return err
		}
		var err error
		res, err = Check(body, copts)
		return err
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// precheck rejects a body by its announced length (Content-Length, a
// file's size) before reading any of it.
func (o CheckOptions) precheck(size int64) error {
	if size < 0 {
		return nil
	}
	switch n := uint64(size); {
	case o.MaxSize > 0 && n > o.MaxSize:
		return invalid(ErrTooLarge, "announced size %d exceeds the limit of %d bytes", n, o.MaxSize)
	case o.ExpectSize > 0 && n != o.ExpectSize:
		return invalid(ErrSizeMismatch, "announced size %d does not match expected %d", n, o.ExpectSize)
	}
	return nil
}

func (o FetchOptions) stall() time.Duration {
	if o.StallTimeout > 0 {
		return o.StallTimeout
	}
	return DefaultStallTimeout
}

// policy is the fetch policy. Its client is shared so that connections
// are reused across fetches, and has no Timeout: a 32 GiB body
// legitimately takes long; the stall watchdog and the Fetch timeout bound
// an attempt instead.
func (o FetchOptions) policy() *urlpolicy.Policy {
	if o.Policy != nil {
		return o.Policy
	}
	return urlpolicy.Default
}

type fetcher struct {
	policy *urlpolicy.Policy
	stall  time.Duration
	fn     func(io.Reader, int64) error
}

// WithTimeout is context.WithTimeout whose cause, once it passes, says
// which timeout it was in words Describe keeps.
func WithTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, d, &causeError{
		msg:  fmt.Sprintf("fetch timeout of %s: %v", d, context.DeadlineExceeded),
		kind: context.DeadlineExceeded,
	})
}

// attempt runs one GET of a URL and hands its body to fn.
func (f *fetcher) attempt(ctx context.Context, raw string) error {
	req, err := http.NewRequest(http.MethodGet, raw, nil)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnsupportedURL, err)
	}
	return Do(ctx, f.policy, f.stall, req, func(resp *http.Response) error {
		return f.fn(resp.Body, resp.ContentLength)
	})
}

// Do makes one HTTP request through policy and calls fn with a 2xx
// response. The URL is checked against the policy before any request
// (the scheme, userinfo and an IP literal host are refused without a
// dial); the policy's client checks the addresses it dials and every
// redirect. A watchdog ends the request when the response, or the next
// body bytes, take longer than stall: resp.Body is watched. A response
// outside 2xx is a *StatusError; a stall ends in ErrStalled, and a
// context that ended with a cause (WithTimeout) returns that cause.
// fn must be done with the body when it returns.
func Do(ctx context.Context, policy *urlpolicy.Policy, stall time.Duration, req *http.Request, fn func(*http.Response) error) error {
	if req.URL == nil {
		return ErrUnsupportedURL
	}
	if err := policy.Check(req.URL); err != nil {
		return err
	}
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w := newWatchdog(stall, cancel)
	defer w.stop()
	w.arm()
	resp, err := policy.Client().Do(req.WithContext(actx))
	w.disarm()
	if err != nil {
		return cause(actx, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return &StatusError{Code: resp.StatusCode, Status: resp.Status, Body: string(body)}
	}
	resp.Body = &watchedReader{r: resp.Body, w: w}
	return cause(actx, fn(resp))
}

// cause prefers why the attempt's context ended (a stall, the timeout)
// over the error it surfaced as, which is only "context canceled".
func cause(actx context.Context, err error) error {
	if err != nil && actx.Err() != nil {
		if c := context.Cause(actx); c != nil {
			return c
		}
	}
	return err
}

// watchdog cancels an attempt when it stays armed for longer than d: it
// is armed only while waiting on the network, so a slow consumer (commP
// on a busy machine) is never mistaken for a stalled source.
type watchdog struct {
	d      time.Duration
	t      *time.Timer
	cancel context.CancelCauseFunc
	read   atomic.Int64 // body bytes so far, for the reason
}

func newWatchdog(d time.Duration, cancel context.CancelCauseFunc) *watchdog {
	w := &watchdog{d: d, cancel: cancel}
	w.t = time.AfterFunc(time.Hour, w.fire)
	w.t.Stop()
	return w
}

func (w *watchdog) fire() {
	w.cancel(&causeError{
		msg:  fmt.Sprintf("%v: no bytes for %s after %d bytes", ErrStalled, w.d, w.read.Load()),
		kind: ErrStalled,
	})
}

func (w *watchdog) arm()    { w.t.Reset(w.d) }
func (w *watchdog) disarm() { w.t.Stop() }
func (w *watchdog) stop()   { w.t.Stop() }

// watchedReader arms the watchdog for the duration of each Read.
type watchedReader struct {
	r io.ReadCloser
	w *watchdog
}

func (r *watchedReader) Close() error { return r.r.Close() }

func (r *watchedReader) Read(p []byte) (int, error) {
	r.w.arm()
	n, err := r.r.Read(p)
	r.w.disarm()
	r.w.read.Add(int64(n))
	return n, err
}
