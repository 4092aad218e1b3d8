package events

import (
	"strconv"
	"unicode/utf8"
)

// Bounds on what an input may carry. Every input is bounded as a whole
// (MaxInputBytes, the input log's message size limit, so NATS producers
// are held to it by the server itself) and every field the fold copies
// into a decision is bounded again there (Excerpt), so that no input can
// make a batch the aggregate log refuses.
const (
	// MaxInputBytes is the largest input message the input log stores.
	MaxInputBytes = 256 << 10
	// MaxURLs and MaxURLLength bound a car.replicated's urls.
	MaxURLs      = 16
	MaxURLLength = 2048
	// MaxSource bounds a car.replicated's source, as re-encoded.
	MaxSource = 4096
	// MaxReplicatedAt bounds replicatedAt (an RFC 3339 time is ~35).
	MaxReplicatedAt = 64
	// MaxReason bounds a reason an input carries (car.invalid,
	// deal.offer_failed, a failed deal.report) and every reason the
	// fold records.
	MaxReason = 1024
	// MaxDeals bounds the deals of one deal.report.
	MaxDeals = 1000
	// MaxProvider bounds a deal's provider address.
	MaxProvider = 128
	// MaxBy bounds who an aggregate.close names.
	MaxBy = 128
	// MaxCIDText bounds the text of any CID an input names (a CAR's CID
	// under the CAR rule is at most 120 characters; a piece CID ~70).
	MaxCIDText = 256
	// excerptLen is how much of an offending value a reason quotes.
	excerptLen = 64
)

// Excerpt quotes s for a reason: whole when short, otherwise its first
// characters and its length, so that a reason never grows with the input.
func Excerpt(s string) string {
	if len(s) <= excerptLen {
		return strconv.Quote(s)
	}
	return strconv.Quote(Truncate(s, excerptLen)) + "… (" + strconv.Itoa(len(s)) + " bytes)"
}

// Truncate cuts s to at most n bytes at a UTF-8 boundary.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// BoundReason is reason cut to MaxReason bytes, marked when cut.
func BoundReason(reason string) string {
	if len(reason) <= MaxReason {
		return reason
	}
	return Truncate(reason, MaxReason-len(" …(cut)")) + " …(cut)"
}
