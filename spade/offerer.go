package spade

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// DefaultMaxAttempts is the number of tries an Offerer makes when
// MaxAttempts is zero.
const DefaultMaxAttempts = 5

// Offerer sends offers to a deal engine. Its zero value is not usable: URL
// is required. It is safe for concurrent use.
type Offerer struct {
	// URL is the engine's offer endpoint, e.g. http://127.0.0.1:9000/offers.
	URL string
	// Token is sent as "Authorization: Bearer <Token>" when not empty. It
	// is never logged and never part of an error.
	Token string `json:"-"`
	// Client sends the requests; nil means a client with a one-minute
	// timeout.
	Client *http.Client
	// OfferDir, when set, receives a copy of every offer as
	// "<RFC3339 UTC time>_<aggregate piece CID v2>.json", written before
	// the offer is sent, so an operator can see what was offered even when
	// sending fails.
	OfferDir string
	// Backoff is the wait between attempts; zero means DefaultBackoff.
	Backoff Backoff
	// MaxAttempts bounds the tries of one Offer; zero means
	// DefaultMaxAttempts.
	MaxAttempts int
	// Logger hears about retries; nil means silence.
	Logger *slog.Logger
	// Now is the clock for OfferDir file names; nil means time.Now.
	Now func() time.Time
	// OnAttempt, if set, hears each request to the engine: its outcome
	// (Outcome of its error) and how long the round trip took (metrics).
	OnAttempt func(outcome string, took time.Duration)
}

var defaultOfferClient = &http.Client{Timeout: time.Minute}

// String names the engine and never the token, so an Offerer printed by
// mistake does not leak it.
func (o *Offerer) String() string { return "offerer " + o.URL }

// Offer sends the offer. It retries network errors, 5xx, 408 and 429 on
// the Backoff schedule and returns nil once the engine accepts (2xx).
// A refusal (other 4xx) returns at once with an error wrapping a
// *RefusedError (errors.As; errors.Is ErrRefused); when attempts run out
// the error wraps the last failure. An offer
// that fails Validate is not sent (ErrBadOffer). Offering the same
// aggregate again is harmless: engines treat it as the same offer.
func (o *Offerer) Offer(ctx context.Context, offer *Offer) error {
	if err := offer.Validate(); err != nil {
		return err
	}
	body, err := json.Marshal(offer)
	if err != nil {
		return fmt.Errorf("offer: %w", err)
	}
	if o.OfferDir != "" {
		if err := o.save(offer.Piece, body); err != nil {
			return fmt.Errorf("offer: save copy: %w", err)
		}
	}
	log := orDiscard(o.Logger).With("aggregate", offer.Aggregate, "piece", offer.Piece)
	onRetry := func(n int, err error, wait time.Duration) {
		log.Warn("offer failed, will retry", "attempt", n, "err", err, "wait", wait)
	}
	err = retry(ctx, o.Backoff, o.attempts(), onRetry, func() error {
		start := time.Now()
		err := postJSON(ctx, o.client(), o.URL, o.Token, body)
		if o.OnAttempt != nil && ctx.Err() == nil {
			o.OnAttempt(Outcome(err), time.Since(start))
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("offer aggregate %d: %w", offer.Aggregate, err)
	}
	return nil
}

func (o *Offerer) client() *http.Client {
	if o.Client != nil {
		return o.Client
	}
	return defaultOfferClient
}

func (o *Offerer) attempts() int {
	if o.MaxAttempts > 0 {
		return o.MaxAttempts
	}
	return DefaultMaxAttempts
}

// save writes body to OfferDir atomically: a reader of the directory sees
// a whole offer or none, never a half-written file.
func (o *Offerer) save(pieceCID string, body []byte) error {
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	name := now().UTC().Format(time.RFC3339) + "_" + pieceCID + ".json"
	return writeAtomic(filepath.Join(o.OfferDir, name), body)
}

func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".offer-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// The outcomes of an offer (Outcome).
const (
	OutcomeAccepted = "accepted"  // the engine took it (2xx)
	OutcomeRefused  = "refused"   // the engine refused it (a 4xx other than 408 and 429)
	OutcomeBadOffer = "bad_offer" // ferry did not send it: it failed Validate
	OutcomeFailed   = "failed"    // no answer, 5xx, 408 or 429
)

// Outcome names what an offer's (or one attempt's) error says.
func Outcome(err error) string {
	switch {
	case err == nil:
		return OutcomeAccepted
	case errors.Is(err, ErrBadOffer):
		return OutcomeBadOffer
	case errors.Is(err, ErrRefused):
		return OutcomeRefused
	}
	return OutcomeFailed
}
