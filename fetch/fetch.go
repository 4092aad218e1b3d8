// Package fetch retrieves a DAG by its root CID from IPFS sources as a CAR,
// verifies it complete while it streams, and stores it in a carstore.
//
// (The package doc, with its rules, is written with the implementation.)
package fetch

import (
	"context"
	"errors"
	"time"

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
	// Store keeps the verified CARs.
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

// Errors a Fetch returns wrap one of these; Reason gives the sentence for
// the pin's status.
var (
	// ErrNotFound: no source had the whole DAG (a missing root or block).
	// It may appear later: the caller retries until its deadline.
	ErrNotFound = errors.New("not found at any source")
	// ErrTooLarge: the CAR passed MaxSize. Final.
	ErrTooLarge = errors.New("too large")
	// ErrInvalid: the bytes are not the DAG (malformed CAR, a block that
	// does not hash to its CID, an unexpected or extraneous block, another
	// root). Final.
	ErrInvalid = errors.New("invalid")
	// ErrUnavailable: no source could be read to the end (refused, 5xx,
	// stalled, timed out). Retried.
	ErrUnavailable = errors.New("unavailable")
)

// Final says whether err is a failure no retry can mend.
func Final(err error) bool {
	return errors.Is(err, ErrTooLarge) || errors.Is(err, ErrInvalid)
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
// its spool file.
func (f *Fetcher) Fetch(ctx context.Context, req Request) (*Result, error) {
	return nil, errors.New("fetch: not built yet")
}
