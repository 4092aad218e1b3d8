package cidtext_test

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ferry-dev/ferry/internal/cidtext"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multibase"
	"github.com/multiformats/go-multihash"
)

// samples are CIDs of the kinds ferry parses: a CAR (codec car,
// sha2-256), a raw block, and piece CIDs v1 and v2.
func samples(t testing.TB) []cid.Cid {
	t.Helper()
	sum, err := multihash.Sum([]byte("ferry"), multihash.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	root := bytes.Repeat([]byte{0x2a}, 32)
	v1, _ := multihash.Encode(root, 0x1012)
	v2, _ := multihash.Encode(append([]byte{0x81, 0x01, 30}, root...), 0x1011)
	return []cid.Cid{cid.NewCidV1(0x0202, sum), cid.NewCidV1(cid.Raw, sum), cid.NewCidV1(0xf101, v1), cid.NewCidV1(cid.Raw, v2)}
}

// check holds Parse to go-cid's answer for s: whatever Parse accepts,
// go-cid must accept as the same CIDv1 and print as s.
func check(t *testing.T, s string) bool {
	var buf [cidtext.MaxBytes]byte
	got, ok := cidtext.Parse(s, &buf)
	if !ok {
		return false
	}
	want, err := cid.Decode(s)
	if err != nil {
		t.Fatalf("Parse accepted %q, go-cid refuses it: %v", s, err)
	}
	dmh, err := multihash.Decode(want.Hash())
	if err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	if want.Version() != 1 || want.String() != s || want.Type() != got.Codec || dmh.Code != got.Hash || !bytes.Equal(dmh.Digest, got.Digest) {
		t.Fatalf("Parse(%q) = codec %#x hash %#x digest %x; go-cid: v%d %s codec %#x hash %#x digest %x",
			s, got.Codec, got.Hash, got.Digest, want.Version(), want, want.Type(), dmh.Code, dmh.Digest)
	}
	return true
}

// TestParseTakesFerrysCIDs: the fast path must take the CIDs ferry sees
// every day (a fast path that refuses everything would pass the fuzz
// test and gain nothing), and refuse other texts of them.
func TestParseTakesFerrysCIDs(t *testing.T) {
	for _, c := range samples(t) {
		s := c.String()
		if !check(t, s) {
			t.Errorf("fast path refuses %s", s)
		}
		upper, _ := c.StringOfBase(multibase.Base32Upper)
		b58, _ := c.StringOfBase(multibase.Base58BTC)
		for _, other := range []string{upper, b58, s[:len(s)-1], s + "a", strings.ToUpper(s[:2]) + s[2:]} {
			if check(t, other) {
				t.Errorf("fast path takes %q, which is not canonical base32 text", other)
			}
		}
	}
	v0, _ := multihash.Sum([]byte("v0"), multihash.SHA2_256, -1)
	in32, _ := multibase.Encode(multibase.Base32, cid.NewCidV0(v0).Bytes())
	if check(t, in32) {
		t.Errorf("fast path takes a CIDv0 in base32: %s", in32)
	}
}

// TestAppendPrintsAsGoCid compares Append with go-cid's String for random
// codecs, multihash codes and digests, and parses the canonical ones back.
func TestAppendPrintsAsGoCid(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	codes := []uint64{0x12, 0x1011, 0x1012, 0x13, 0xb220}
	for range 2000 {
		codec := []uint64{0x55, 0x70, 0x0202, 0xf101, rng.Uint64N(1 << 40)}[rng.IntN(5)]
		code := codes[rng.IntN(len(codes))]
		digest := make([]byte, 1+rng.IntN(64))
		for i := range digest {
			digest[i] = byte(rng.Uint32())
		}
		mh, err := multihash.Encode(digest, code)
		if err != nil {
			t.Fatal(err)
		}
		want := cid.NewCidV1(codec, mh).String()
		if got := string(cidtext.Append(nil, codec, code, digest)); got != want {
			t.Fatalf("codec %#x hash %#x digest %x: Append %s, go-cid %s", codec, code, digest, got, want)
		}
		check(t, want)
	}
}

// FuzzParseAgreesWithGoCid: for any text, Parse accepts only what go-cid
// accepts, with go-cid's reading of it.
func FuzzParseAgreesWithGoCid(f *testing.F) {
	for _, c := range samples(f) {
		s := c.String()
		f.Add(s)
		f.Add(s[:len(s)-2])
		f.Add(s[:5] + "7" + s[6:])
	}
	// Non-minimal varints and a trailing byte, in canonical base32.
	f.Add(string(must(multibase.Encode(multibase.Base32, []byte{0x81, 0x00, 0x55, 0x12, 0x01, 0x00}))))
	f.Add(string(must(multibase.Encode(multibase.Base32, []byte{0x01, 0x55, 0x12, 0x01, 0x00, 0x00}))))
	f.Fuzz(func(t *testing.T, s string) { check(t, s) })
}

func must(s string, err error) string {
	if err != nil {
		panic(err)
	}
	return s
}

// FuzzParseBytesAgreesWithGoCid is the same check over binary CIDs in
// canonical text, where the fuzzer reaches the varints and lengths.
func FuzzParseBytesAgreesWithGoCid(f *testing.F) {
	for _, c := range samples(f) {
		f.Add(c.Bytes())
	}
	f.Add([]byte{0x81, 0x00, 0x55, 0x12, 0x01, 0x00})
	f.Add([]byte{0x01, 0x55, 0x12, 0x01, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		check(t, must(multibase.Encode(multibase.Base32, b)))
	})
}

// TestKeyIsTheHashPrefix: Key is SHA-256's first 16 bytes, for texts that
// fit its stack copy and for longer ones, and a CID's costs no allocation.
func TestKeyIsTheHashPrefix(t *testing.T) {
	for _, s := range []string{"", "bafy", strings.Repeat("b", 128), strings.Repeat("c", 129), strings.Repeat("d", 1000)} {
		sum := sha256.Sum256([]byte(s))
		if got := cidtext.Key(s); !bytes.Equal(got[:], sum[:16]) {
			t.Fatalf("Key of %d bytes: %x, want %x", len(s), got, sum[:16])
		}
	}
	car := samples(t)[0].String()
	if n := testing.AllocsPerRun(100, func() { cidtext.Key(car) }); n != 0 {
		t.Fatalf("Key of a CID allocates %v times", n)
	}
}
