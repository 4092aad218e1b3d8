package events

import (
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/ipfs/go-cid"
)

// Bounds of a pin request, the Pinning Service API's where it has them.
const (
	MaxPinName      = 255  // characters of a name
	MaxPinOrigins   = 20   // origins of a pin
	MaxOriginText   = 1024 // bytes of one origin
	MaxPinMeta      = 64   // meta entries
	MaxPinMetaKey   = 255  // bytes of a meta key
	MaxPinMetaValue = 2048 // bytes of a meta value
	// MaxRequestID bounds a request id; ferry makes 32 hex digits.
	MaxRequestID = 64
)

// PinCID parses the CID of a pin request (CIDv0 or v1, any codec).
func PinCID(s string) (cid.Cid, error) {
	if s == "" {
		return cid.Undef, invalid("cid is missing")
	}
	if len(s) > MaxCIDText {
		return cid.Undef, invalid("cid of %d bytes: at most %d", len(s), MaxCIDText)
	}
	c, err := cid.Decode(s)
	if err != nil {
		return cid.Undef, invalid("cid %s is not a CID: %v", Excerpt(s), err)
	}
	return c, nil
}

// ValidRequestID says whether s may name a pin request: 1 to MaxRequestID
// letters, digits, '-' or '_', so it fits a subject token and a msg id.
func ValidRequestID(s string) bool {
	if s == "" || len(s) > MaxRequestID {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Validate checks a pin request against the Pinning Service API's bounds
// and ferry's; the reason is a sentence for the caller.
func (e *PinRequested) Validate() error {
	if !ValidRequestID(e.RequestID) {
		return invalid("requestid %s is not 1 to %d letters, digits, - or _", Excerpt(e.RequestID), MaxRequestID)
	}
	if e.Replaces != "" && !ValidRequestID(e.Replaces) {
		return invalid("replaces %s is not a request id", Excerpt(e.Replaces))
	}
	if _, err := PinCID(e.CID); err != nil {
		return err
	}
	if !utf8.ValidString(e.Name) {
		return invalid("name is not UTF-8")
	}
	if n := utf8.RuneCountInString(e.Name); n > MaxPinName {
		return invalid("name of %d characters: at most %d", n, MaxPinName)
	}
	if len(e.Origins) > MaxPinOrigins {
		return invalid("%d origins: at most %d", len(e.Origins), MaxPinOrigins)
	}
	for i, o := range e.Origins {
		if err := validOrigin(o); err != nil {
			return invalid("origins[%d]: %v", i, err)
		}
	}
	if len(e.Meta) > MaxPinMeta {
		return invalid("%d meta entries: at most %d", len(e.Meta), MaxPinMeta)
	}
	for k, v := range e.Meta {
		if k == "" || len(k) > MaxPinMetaKey || len(v) > MaxPinMetaValue || !utf8.ValidString(k) || !utf8.ValidString(v) {
			return invalid("meta %s: keys are 1 to %d bytes, values at most %d, both UTF-8", Excerpt(k), MaxPinMetaKey, MaxPinMetaValue)
		}
	}
	if e.Created.IsZero() {
		return invalid("created is missing")
	}
	return nil
}

// validOrigin accepts a multiaddr's text (kept, never dialed) or an
// http(s) URL (fetched as a Trustless Gateway, under the URL policy).
func validOrigin(o string) error {
	switch {
	case o == "":
		return invalid("empty")
	case len(o) > MaxOriginText:
		return invalid("%d bytes: at most %d", len(o), MaxOriginText)
	case strings.HasPrefix(o, "/"):
		return nil
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return invalid("%s is neither a multiaddr nor an http(s) URL", Excerpt(o))
	}
	return nil
}

// Validate checks a cancellation names a request.
func (e *PinCancelled) Validate() error {
	if !ValidRequestID(e.RequestID) {
		return invalid("requestid %s is not a request id", Excerpt(e.RequestID))
	}
	return nil
}
