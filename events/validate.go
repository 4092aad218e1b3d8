package events

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"time"

	"github.com/ferry-dev/ferry/internal/cidtext"
	"github.com/ferry-dev/ferry/piece"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// InvalidError is why an event breaks a rule. Its message is the reason
// alone, a sentence meant for the producer: the fold records it as the
// reason of a car.rejected decision and POST /v1/cars answers with it, so
// its text is part of the aggregate log (docs/events.md lists the reasons).
type InvalidError struct {
	Reason string
}

func (e *InvalidError) Error() string { return e.Reason }

// invalid returns an *InvalidError whose reason is the formatted text.
func invalid(format string, args ...any) error {
	return &InvalidError{Reason: fmt.Sprintf(format, args...)}
}

// DealRoom is what a deal leaves one CAR: the deal's padded size and the
// largest padded piece it takes beside its data segment index. The caller
// computes MaxPiece with frc58.MaxPiece: the wire format knows no FRC-0058
// arithmetic (and so links none of its libraries).
type DealRoom struct {
	DealSize, MaxPiece uint64
}

// Validate checks a car.replicated against the rules of DESIGN.md for a
// deal with room; it returns an *InvalidError with the reason the event is
// unacceptable, or nil when it is good.
func (e *CarReplicated) Validate(room DealRoom) error {
	_, err := e.Check(room)
	return err
}

// Checked is what Check parsed of a car.replicated.
type Checked struct {
	// Car is the CAR's CID in its canonical text (see CanonicalCID), when
	// it parses (even if a later rule fails).
	Car string
	// Piece is the claimed piece, when the event is valid and claims one.
	Piece piece.Commitment
}

// Check is Validate that also returns what it parsed, so that a caller (the
// fold) parses each CID once.
func (e *CarReplicated) Check(room DealRoom) (Checked, error) {
	var chk Checked
	err := e.check(room, &chk)
	return chk, err
}

func (e *CarReplicated) check(room DealRoom, chk *Checked) error {
	car, err := CarCID(e.Car)
	if err != nil {
		return err
	}
	chk.Car = car
	if e.Size == 0 {
		return invalid("size: must be at least 1 byte")
	}
	padded := piece.PaddedSize(e.Size)
	if max := room.MaxPiece; e.Size > piece.Unpadded(max) || padded > max {
		return invalid("size: %d bytes pads to a %d byte piece, larger than the %d bytes a %d byte deal holds beside its index",
			e.Size, padded, max, room.DealSize)
	}
	if len(e.MD5) != 32 {
		return invalid("md5: want 32 hex digits, got %d characters", len(e.MD5))
	}
	if _, err := hex.DecodeString(e.MD5); err != nil {
		return invalid("md5: not hexadecimal")
	}
	if err := validURLs(e.URLs); err != nil {
		return err
	}
	if e.ReplicatedAt != "" {
		if _, err := time.Parse(time.RFC3339, e.ReplicatedAt); err != nil || len(e.ReplicatedAt) > MaxReplicatedAt {
			return invalid("replicatedAt: not an RFC 3339 time: %s", Excerpt(e.ReplicatedAt))
		}
	}
	if len(e.Source) > 0 {
		// Measured as it will be stored: Encode re-marshals (compacts and
		// escapes) the raw JSON, so the bytes as sent are not the measure.
		enc, err := json.Marshal(e.Source)
		if err != nil {
			return invalid("source: not valid JSON")
		}
		if len(enc) > MaxSource {
			return invalid("source: %d bytes, more than %d", len(enc), MaxSource)
		}
	}
	if e.Piece != "" {
		if len(e.Piece) > MaxCIDText {
			return invalid("piece: not a piece CID: %s", Excerpt(e.Piece))
		}
		p, err := e.Commitment()
		if err != nil {
			return err
		}
		chk.Piece = p
	} else if e.PieceSize != 0 {
		return invalid("pieceSize: given without a piece")
	}
	return nil
}

// CarCID checks s against the rule for a CAR's CID and returns its
// canonical text, or an *InvalidError with the reason it is refused. The rule: a CIDv1 with the
// CAR codec (0x0202, "bagbaiera…" for sha2-256), whose multihash is not
// the identity and has a digest of at most 64 bytes. That is how storage
// services name CARs (a CAR's CID is the hash of its bytes); a CIDv0, or
// a dag-pb, raw or dag-cbor CID names a DAG, not a CAR file, and is the
// usual mistake of passing a CAR's root instead of the CAR.
func CarCID(s string) (string, error) {
	if s == "" {
		return "", invalid("car: missing")
	}
	if len(s) > MaxCIDText {
		return "", invalid("car: not a CID: %s", Excerpt(s))
	}
	var buf [cidtext.MaxBytes]byte
	if c, ok := cidtext.Parse(s, &buf); ok && c.Codec == CodecCAR {
		return s, nil // canonical as it stands, sha2-256
	}
	c, err := cid.Decode(s)
	if err != nil {
		return "", invalid("car: %s is not a CID: %v", Excerpt(s), err)
	}
	pre := c.Prefix()
	switch {
	case pre.Version != 1 || pre.Codec != CodecCAR:
		return "", invalid("car: %s is a CIDv%d with codec 0x%x; a CAR is named by a CIDv1 with the CAR codec 0x0202 (bagbaiera…)",
			Excerpt(s), pre.Version, pre.Codec)
	case pre.MhType == multihash.IDENTITY || pre.MhLength > 64:
		return "", invalid("car: %s: an identity hash or a digest over 64 bytes does not name a CAR", Excerpt(s))
	}
	return c.String(), nil
}

// CodecCAR is the multicodec of a CAR file's CID.
const CodecCAR = 0x0202

// CanonicalCID returns the text go-cid prints for the CID s names
// (base32 for v1), so that two texts of one CID are one CAR.
func CanonicalCID(s string) (string, error) {
	c, err := cid.Decode(s)
	if err != nil {
		return "", err
	}
	return c.String(), nil
}

// Commitment parses the event's claimed piece and checks it against the
// CAR size; the error, an *InvalidError, says why they disagree.
func (e *CarReplicated) Commitment() (piece.Commitment, error) {
	return CheckPiece(e.Piece, e.PieceSize, e.Size)
}

// CheckPiece parses a piece CID (v2, or v1 with its padded size) claimed for
// a payload of size bytes and checks that the two agree; the error is an
// *InvalidError.
func CheckPiece(pieceCID string, pieceSize, size uint64) (piece.Commitment, error) {
	c, err := piece.Parse(pieceCID, pieceSize)
	if err != nil {
		return c, invalid("piece: %v", err)
	}
	if want := piece.PaddedSize(size); c.Padded != want {
		return c, invalid("piece: padded size %d does not match size %d (pads to %d)", c.Padded, size, want)
	}
	if c.Payload != 0 && c.Payload != size {
		return c, invalid("piece: v2 CID is for a %d byte payload, size says %d", c.Payload, size)
	}
	c.Payload = size
	return c, nil
}

func validURLs(urls []string) error {
	if len(urls) == 0 {
		return invalid("urls: at least one http(s) URL is needed")
	}
	if len(urls) > MaxURLs {
		return invalid("urls: %d given, at most %d", len(urls), MaxURLs)
	}
	for i, s := range urls {
		if len(s) > MaxURLLength {
			return invalid("urls[%d]: %d characters, more than %d", i, len(s), MaxURLLength)
		}
		if plainHTTPURL(s) {
			continue
		}
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return invalid("urls[%d]: %s is not an http(s) URL", i, Excerpt(s))
		}
		// Piece workers refuse it too (internal/urlpolicy); refusing it
		// here answers the producer at once. Addresses are left to the
		// workers: only they resolve names, when they dial.
		if u.User != nil {
			return invalid("urls[%d]: userinfo (user@ or user:password@) is not allowed in a URL", i)
		}
	}
	return nil
}

// plainHTTPURL reports, without url.Parse's allocations, that s is an
// http(s) URL of the plainest kind: a scheme, a host of letters, digits,
// dots and dashes, and a path of unreserved characters and slashes. Every
// producer's URL in practice is one; url.Parse decides the rest. It never
// accepts what url.Parse and the host check would turn away
// (FuzzPlainHTTPURL).
func plainHTTPURL(s string) bool {
	switch {
	case len(s) > 8 && s[:8] == "https://":
		s = s[8:]
	case len(s) > 7 && s[:7] == "http://":
		s = s[7:]
	default:
		return false
	}
	host := 0
	for host < len(s) && s[host] != '/' {
		if !hostByte(s[host]) {
			return false
		}
		host++
	}
	if host == 0 {
		return false
	}
	for _, c := range []byte(s[host:]) {
		if !hostByte(c) && c != '_' && c != '~' && c != '/' {
			return false
		}
	}
	return true
}

// hostByte reports a letter, digit, dot or dash: what plainHTTPURL takes
// in a host, and with '_', '~' and '/' in a path.
func hostByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-'
}
