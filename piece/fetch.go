package piece

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
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
	// ErrUnsupportedURL: a URL whose scheme is not http, https or file.
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
	// Client makes the HTTP requests; nil means a client of this package's
	// own (never http.DefaultClient). Its Timeout should be zero: it would
	// cut a long body short however steadily it flows.
	Client *http.Client
}

// StatusError is an HTTP response outside 2xx.
type StatusError struct {
	Code   int
	Status string
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
		return fmt.Sprintf("fetch %s: %v", e.Attempts[0].URL, e.Attempts[0].Err)
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
		fmt.Fprintf(&b, "%s%s: %v", sep, a.URL, a.Err)
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

// Invalid reports whether every source was tried and gave bad bytes: the
// content itself is bad wherever it is stored, so fetching again will not
// help. It is false when the context ended before every source was tried.
func (e *FetchError) Invalid() bool {
	if len(e.Attempts) == 0 || len(e.Attempts) < e.Sources {
		return false
	}
	for _, a := range e.Attempts {
		if !IsInvalid(a.Err) {
			return false
		}
	}
	return true
}

// Last is the last attempt's error: the reason to report.
func (e *FetchError) Last() error { return e.Attempts[len(e.Attempts)-1].Err }

// Fetch tries urls in order (http, https, file) and calls fn with the
// first body that can be opened; size is its length, or -1 when unknown.
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
		ctx, cancel = context.WithTimeoutCause(ctx, opts.Timeout,
			fmt.Errorf("fetch timeout of %s: %w", opts.Timeout, context.DeadlineExceeded))
		defer cancel()
	}
	f := fetcher{client: opts.client(), stall: opts.stall(), fn: fn}
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

func (o FetchOptions) client() *http.Client {
	if o.Client != nil {
		return o.Client
	}
	return defaultClient()
}

// defaultClient is shared so that connections are reused across fetches.
// It has no Timeout: a 32 GiB body legitimately takes long; the stall
// watchdog and the Fetch timeout bound an attempt instead.
var defaultClient = sync.OnceValue(func() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 4
	return &http.Client{Transport: t}
})

type fetcher struct {
	client *http.Client
	stall  time.Duration
	fn     func(io.Reader, int64) error
}

func (f *fetcher) attempt(ctx context.Context, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnsupportedURL, err)
	}
	switch u.Scheme {
	case "http", "https":
		return f.http(ctx, raw)
	case "file":
		return f.file(ctx, u)
	}
	return fmt.Errorf("%w: scheme %q", ErrUnsupportedURL, u.Scheme)
}

// http runs one HTTP attempt under a watchdog that cancels it when the
// response or the next body bytes are late.
func (f *fetcher) http(ctx context.Context, raw string) error {
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w := newWatchdog(f.stall, cancel)
	defer w.stop()
	req, err := http.NewRequestWithContext(actx, http.MethodGet, raw, nil)
	if err != nil {
		return err
	}
	w.arm()
	resp, err := f.client.Do(req)
	w.disarm()
	if err != nil {
		return cause(actx, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &StatusError{Code: resp.StatusCode, Status: resp.Status}
	}
	return cause(actx, f.fn(&watchedReader{r: resp.Body, w: w}, resp.ContentLength))
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

// file reads a local file: for tests, and for operators pointing ferry at
// a disk. The context is checked between reads; a file does not stall.
func (f *fetcher) file(ctx context.Context, u *url.URL) error {
	if u.Host != "" && u.Host != "localhost" {
		return fmt.Errorf("%w: file URL with host %q", ErrUnsupportedURL, u.Host)
	}
	fh, err := os.Open(u.Path)
	if err != nil {
		return err
	}
	defer fh.Close()
	size := int64(-1)
	if st, err := fh.Stat(); err == nil && st.Mode().IsRegular() {
		size = st.Size()
	}
	return f.fn(&ctxReader{ctx: ctx, r: fh}, size)
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
	w.cancel(fmt.Errorf("%w: no bytes for %s after %d bytes", ErrStalled, w.d, w.read.Load()))
}

func (w *watchdog) arm()    { w.t.Reset(w.d) }
func (w *watchdog) disarm() { w.t.Stop() }
func (w *watchdog) stop()   { w.t.Stop() }

// watchedReader arms the watchdog for the duration of each Read.
type watchedReader struct {
	r io.Reader
	w *watchdog
}

func (r *watchedReader) Read(p []byte) (int, error) {
	r.w.arm()
	n, err := r.r.Read(p)
	r.w.disarm()
	r.w.read.Add(int64(n))
	return n, err
}

// ctxReader fails reads once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r *ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, context.Cause(r.ctx)
	}
	return r.r.Read(p)
}
