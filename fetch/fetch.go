// Package fetch retrieves a DAG by its root CID from IPFS sources as a CAR,
// verifies it complete while it streams, and stores it in a carstore.
//
// # Rules
//
//   - Sources, in order: the request's http(s) origins as Trustless
//     Gateways (multiaddrs are skipped), Config.Gateways
//     (GET {base}/ipfs/{cid}?format=car, asking for a CARv1 in dfs order
//     without duplicates; a dups=y answer is accepted and walked as such,
//     an order=unk one refused), then Config.KuboRPC
//     (POST {base}/api/v0/dag/export?arg={cid}, whose failures arrive in
//     the X-Stream-Error trailer of a 200). Every request goes through
//     carcheck.Do: the URL policy, a stall watchdog on every read; and
//     each source has Timeout.
//   - One pass over the network bytes: they go to a spool file from the
//     Store as they arrive and through carcheck.Check, which hashes every
//     block against its CID, computes the CAR CID (sha2-256, codec car),
//     md5 and commP, and hands each verified block to go-trustless-utils'
//     traversal (ExploreAllRecursively from the root), which fails on a
//     missing, unexpected or extraneous block. Duplicate blocks the walk
//     needs again are read back from the spool file: memory holds one
//     block and an index of offsets, never the DAG.
//   - The CAR header must name exactly the requested root, and the CAR
//     must hold it: a header with no block (what a gateway answers for a
//     root it lacks) is "not found".
//   - The CAR is stored (Store.Put under its CAR CID) only once complete
//     and verified; any failure or a cancelled ctx discards the spool
//     file. Two fetches of one root store it once (Put keeps the first).
//   - A source that lacks the DAG (a missing root or block, 404, a
//     truncated CAR, a URL the policy refuses, kubo's 500 "not found"
//     for a root its repo lacks) counts as not found; bad
//     bytes as invalid; a source that could not be read to the end
//     (refused connection, 5xx, stall, timeout) as unavailable. The next
//     source is tried after each, except after too large: Fetch stops
//     reading at MaxSize and tries no other source. The one error
//     returned is decided by verdict's precedence: too large, then
//     unavailable, then invalid, then not found.
//   - An *Error's Reason names sources by list and index, never by URL,
//     quotes nothing a source sent but CIDs and offsets, and is bounded.
package fetch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ferry-dev/ferry/carcheck"
	"github.com/ferry-dev/ferry/carstore"
	"github.com/ferry-dev/ferry/internal/urlpolicy"
	"github.com/ferry-dev/ferry/piece"
	"github.com/ipfs/go-cid"
)

// Defaults of Config's limits.
const (
	DefaultMaxSize      = 31 << 30
	DefaultTimeout      = 4 * time.Hour
	DefaultStallTimeout = 2 * time.Minute
)

// Config says where a Fetcher looks and how long it tries.
type Config struct {
	// Gateways are base URLs of Trustless Gateways, tried in order after
	// a request's own http(s) origins.
	Gateways []string
	// KuboRPC are base URLs of kubo RPC APIs (POST /api/v0/dag/export),
	// tried after the gateways.
	KuboRPC []string
	// Policy decides which URLs may be fetched (nil: urlpolicy's default,
	// public addresses only).
	Policy *urlpolicy.Policy
	// MaxSize is the largest CAR fetched (DefaultMaxSize if zero).
	MaxSize uint64
	// Timeout bounds one source's whole fetch (DefaultTimeout if zero).
	Timeout time.Duration
	// StallTimeout bounds the wait for the next bytes
	// (DefaultStallTimeout if zero).
	StallTimeout time.Duration
	// Store keeps the verified CARs and the spool files (required).
	Store carstore.Store
}

// Request is one DAG to fetch.
type Request struct {
	Root cid.Cid
	// Origins are the pin's origins: its http(s) URLs are tried first as
	// Trustless Gateways; multiaddrs are not dialed.
	Origins []string
}

// Result is a fetched, verified and stored CAR.
type Result struct {
	// Car is the CID of the CAR's bytes (sha2-256, codec car).
	Car        cid.Cid
	Size       uint64
	MD5        string
	Commitment piece.Commitment
	Blocks     int
	// URL is where the store serves the CAR.
	URL string
	// Source names the source that served it, without credentials.
	Source string
}

// Errors a Fetch returns wrap one of these (an *Error); Reason gives the
// sentence for the pin's status.
var (
	// ErrNotFound: no source had the whole DAG (a missing root or block).
	// It may appear later: the caller retries until its deadline.
	ErrNotFound = errors.New("not found at any source")
	// ErrTooLarge: the CAR passed MaxSize. Final.
	ErrTooLarge = errors.New("too large")
	// ErrInvalid: the bytes are not the DAG (malformed CAR, a block that
	// does not hash to its CID, an unexpected or extraneous block, another
	// root, not a DAG). Final.
	ErrInvalid = errors.New("invalid")
	// ErrUnavailable: a source could not be read to the end (refused, 5xx,
	// stalled, timed out) and none had the DAG. Retried.
	ErrUnavailable = errors.New("unavailable")
)

// Final says whether err is a failure no retry can mend.
func Final(err error) bool {
	return errors.Is(err, ErrTooLarge) || errors.Is(err, ErrInvalid)
}

// Error is why a Fetch failed: its Kind (one of the Err… above) and a
// Reason that says, per source tried, what went wrong.
type Error struct {
	Kind error
	// Reason is at most about a kilobyte, names sources by their list and
	// index (origins[0], gateways[1], kubo[0]) and quotes nothing a source
	// sent but CIDs and offsets: it is fit for a pin's status.
	Reason string
}

func (e *Error) Error() string { return e.Kind.Error() + ": " + e.Reason }
func (e *Error) Unwrap() error { return e.Kind }

// Reason returns the reason of a Fetch error, or err's text for others.
func Reason(err error) string {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Reason
	}
	return err.Error()
}

// Fetcher fetches DAGs. It is safe for concurrent use.
type Fetcher struct {
	cfg Config
}

// New returns a Fetcher with cfg's defaults filled in.
func New(cfg Config) *Fetcher {
	if cfg.MaxSize == 0 {
		cfg.MaxSize = DefaultMaxSize
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.StallTimeout == 0 {
		cfg.StallTimeout = DefaultStallTimeout
	}
	return &Fetcher{cfg: cfg}
}

// Fetch tries each source in order until one serves the whole DAG of
// req.Root, verified, and stores it. The CAR is stored once whoever else
// fetches it at the same time. Cancelling ctx stops the fetch and removes
// its spool file; the error then wraps ctx's cause and none of the kinds.
func (f *Fetcher) Fetch(ctx context.Context, req Request) (*Result, error) {
	if !req.Root.Defined() {
		return nil, &Error{Kind: ErrInvalid, Reason: "no root CID"}
	}
	if f.cfg.Store == nil {
		return nil, errors.New("fetch: no CAR store configured")
	}
	srcs := f.sources(req.Origins)
	if len(srcs) == 0 {
		return nil, &Error{Kind: ErrUnavailable, Reason: "no sources: no http(s) origin, gateway or kubo RPC"}
	}
	var fails []attemptFailure
	for _, src := range srcs {
		res, fl := f.attempt(ctx, src, req.Root)
		if fl == nil {
			return res, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("fetch %s: %w", req.Root, context.Cause(ctx))
		}
		fails = append(fails, attemptFailure{src.name, fl})
		if fl.kind == ErrTooLarge {
			break // the same DAG is as large everywhere
		}
	}
	return nil, verdict(fails)
}

// verdict decides one error from every source's failure. Precedence:
//
//  1. ErrTooLarge, at once: the DAG is the same everywhere.
//  2. ErrUnavailable when any source could not be read to the end: it
//     may hold the DAG, so the fetch is worth retrying.
//  3. ErrInvalid when a source served bad bytes and every other lacks
//     the DAG: the only copy found is corrupt.
//  4. ErrNotFound: every source lacks the DAG (or was refused by the URL
//     policy, or answered 4xx).
func verdict(fails []attemptFailure) *Error {
	kind := ErrNotFound
	for _, k := range []error{ErrTooLarge, ErrUnavailable, ErrInvalid} {
		if slices.ContainsFunc(fails, func(a attemptFailure) bool { return a.kind == k }) {
			kind = k
			break
		}
	}
	reason := bounded(len(fails), reasonAttempts, "; ", func(i int) string {
		return fails[i].source + ": " + carcheck.Clip(fails[i].reason, reasonAttempt)
	})
	return &Error{Kind: kind, Reason: reason}
}

// bounded joins the texts of the first max of n items with sep and says
// how many more there were.
func bounded(n, max int, sep string, item func(i int) string) string {
	var b strings.Builder
	for i := range min(n, max) {
		if i > 0 {
			b.WriteString(sep)
		}
		b.WriteString(item(i))
	}
	if n > max {
		fmt.Fprintf(&b, "%sand %d more", sep, n-max)
	}
	return b.String()
}

// Bounds of a Reason: how many sources it lists, and how long the text of
// one may be.
const (
	reasonAttempts = 4
	reasonAttempt  = 240
)

type attemptFailure struct {
	source string
	*failure
}

// failure is why one source failed: a kind and a reason.
type failure struct {
	kind   error
	reason string
}

func (f *failure) Error() string { return f.reason }
