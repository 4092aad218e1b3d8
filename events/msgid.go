package events

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
)

// maxIDPrefix bounds the readable part of a content id. The digest after
// it covers everything, so cutting the prefix loses readability, never
// uniqueness.
const maxIDPrefix = 256

// digestLen is the length of contentDigest's answer.
const digestLen = sha256.Size * 2

// contentID is a message id for a fact whose content matters: the readable
// prefix, a slash, and contentDigest(parts...). Two facts get the same id
// only if every part is equal, however long the parts are, so the
// duplicate window eats a retried publish and nothing else. Callers pass
// every field the fold reads, the ones shown in the prefix included.
func contentID(prefix string, parts ...string) string {
	return readable(prefix, maxIDPrefix) + "/" + contentDigest(parts...)
}

// readable is s cut to max bytes, with every byte outside printable ASCII
// (space, control characters, UTF-8) as '_': a NATS header value cannot
// hold a line break, and a cut cannot then split a character.
func readable(s string, max int) string {
	b := []byte(s[:min(len(s), max)])
	for i, c := range b {
		if c <= ' ' || c > '~' {
			b[i] = '_'
		}
	}
	return string(b)
}

// contentDigest is the hex SHA-256 of parts, each written as a netstring
// ("<length in bytes>:<bytes>,"), so no two lists of parts encode alike:
// ("a/b", "c") and ("a", "b/c") differ.
func contentDigest(parts ...string) string {
	h := sha256.New()
	var buf [24]byte
	for _, p := range parts {
		h.Write(append(strconv.AppendInt(buf[:0], int64(len(p)), 10), ':'))
		h.Write([]byte(p))
		h.Write([]byte{','})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// BoundedID keeps message ids within a sane header length. An id longer
// than that keeps its start and ends in the digest of the whole id, so two
// ids that differ only past the cut stay two ids.
func BoundedID(id string) string {
	const max = 512
	if len(id) > max {
		return readable(id, max-1-digestLen) + "/" + contentDigest(id)
	}
	return strings.TrimSpace(id)
}
