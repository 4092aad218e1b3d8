package spade

import (
	"errors"
	"fmt"
	"net/http"
)

// Errors returned by this package. Each is wrapped with the detail that
// names the field or the step at fault; match them with errors.Is.
var (
	// ErrBadOffer is returned by Offer.Validate (and so by Offerer.Offer)
	// for an offer that breaks the wire contract.
	ErrBadOffer = errors.New("bad offer")
	// ErrBadReport is returned by ParseReport for a report that breaks the
	// wire contract.
	ErrBadReport = errors.New("bad report")
	// ErrBadOracle is returned by ParseOracle for a document it cannot read.
	ErrBadOracle = errors.New("bad oracle document")
	// ErrTooLarge is returned when a body or document is larger than its
	// bound (MaxReportSize, MaxOracleSize).
	ErrTooLarge = errors.New("too large")
	// ErrRefused matches every *RefusedError.
	ErrRefused = errors.New("refused")
	// ErrClosed is returned by a Simulator that has been closed.
	ErrClosed = errors.New("simulator closed")
)

// RefusedError is a permanent refusal: the other side answered with a 4xx
// status (other than 408 and 429). Sending the same request again will not
// help, so it is never retried.
type RefusedError struct {
	// Status is the HTTP status code.
	Status int
	// Reason is the "error" of the JSON answer, or its text.
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("refused with %d %s: %s", e.Status, http.StatusText(e.Status), e.Reason)
}

// Is makes errors.Is(err, ErrRefused) true for every RefusedError.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// StatusError is a transient failure the other side reported with its HTTP
// status (5xx, 408 or 429); it is retried.
type StatusError struct {
	Status int
	Reason string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("answered %d %s: %s", e.Status, http.StatusText(e.Status), e.Reason)
}
