package carcheck

import (
	"errors"
	"fmt"
)

// Kinds of bad bytes. Check and FetchAndCheck return them inside an
// *InvalidError, so errors.Is(err, ErrTruncated) and friends work, and
// errors.Is(err, ErrInvalid) matches every one of them.
var (
	// ErrInvalid matches any *InvalidError: the bytes are bad, as opposed
	// to an I/O failure while reading them.
	ErrInvalid = errors.New("invalid CAR")
	// ErrMalformed: a header, varint or CID that does not parse.
	ErrMalformed = errors.New("malformed CAR")
	// ErrTruncated: the bytes end inside the header, a section or a block.
	ErrTruncated = errors.New("truncated CAR")
	// ErrBlockMismatch: a block's bytes do not hash to its CID.
	ErrBlockMismatch = errors.New("block does not match its CID")
	// ErrUnsupportedHash: a block's CID uses a multihash we cannot compute.
	ErrUnsupportedHash = errors.New("unsupported multihash")
	// ErrTooLarge: more bytes than CheckOptions.MaxSize.
	ErrTooLarge = errors.New("CAR too large")
	// ErrTooSmall: fewer bytes than a piece can be computed from.
	ErrTooSmall = errors.New("CAR too small for a piece")
	// ErrSizeMismatch: the size differs from CheckOptions.ExpectSize.
	ErrSizeMismatch = errors.New("size mismatch")
	// ErrMD5Mismatch: the md5 differs from CheckOptions.ExpectMD5.
	ErrMD5Mismatch = errors.New("md5 mismatch")
)

// InvalidError says the bytes themselves are bad: a broken CAR, or bytes
// that differ from what the caller expected. Retrying the same source will
// not help; its Reason is a sentence fit for a car.invalid event.
type InvalidError struct {
	// Kind is one of the Err… kinds above.
	Kind error
	// Reason says what is wrong and where, e.g.
	// "block 17 (bafy…) at offset 12345: bytes do not match CID".
	Reason string
}

func (e *InvalidError) Error() string { return "invalid CAR: " + e.Reason }

// Unwrap returns the kind, so errors.Is(err, ErrTruncated) works.
func (e *InvalidError) Unwrap() error { return e.Kind }

// Is makes every InvalidError match ErrInvalid.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

// IsInvalid reports whether err (or an error it wraps) says the bytes are
// bad, rather than that reading them failed.
func IsInvalid(err error) bool { return errors.Is(err, ErrInvalid) }

// invalid builds an *InvalidError of a kind with a formatted reason.
func invalid(kind error, format string, args ...any) *InvalidError {
	return &InvalidError{Kind: kind, Reason: fmt.Sprintf(format, args...)}
}
