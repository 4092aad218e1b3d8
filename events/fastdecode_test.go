package events

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/internal/mutate"

	"github.com/ferry-dev/ferry/piece"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// fdAgree checks that Decode makes of data what decodeJSON (the two-step
// encoding/json path) makes of it, with the same error text, and that the
// fast path, when it takes data, agrees too. It reports whether the fast
// path took data.
func fdAgree(t testing.TB, data []byte) bool {
	t.Helper()
	want, werr := decodeJSON(data)
	got, gerr := Decode(data)
	if (werr == nil) != (gerr == nil) || werr != nil && werr.Error() != gerr.Error() {
		t.Fatalf("%q:\nDecode error     %v\ndecodeJSON error %v", data, gerr, werr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q:\nDecode     %s\ndecodeJSON %s", data, fdShow(got), fdShow(want))
	}
	fast, ok := decodeFast(data)
	switch {
	case ok && werr != nil:
		t.Fatalf("%q: fast path took what decodeJSON refuses: %v", data, werr)
	case ok && !reflect.DeepEqual(fast, want):
		t.Fatalf("%q:\nfast path  %s\ndecodeJSON %s", data, fdShow(fast), fdShow(want))
	case !ok && fast != nil:
		t.Fatalf("%q: fast path gave up but returned %s", data, fdShow(fast))
	}
	return ok
}

func fdShow(ev Event) string {
	if cr, ok := ev.(*CarReplicated); ok {
		return fmt.Sprintf("%#v (source %q)", *cr, cr.Source)
	}
	return fmt.Sprintf("%#v", ev)
}

// fdCar and fdPiece are what internal/testutil's CarCID and FakePiece make
// (this internal test cannot import testutil, which imports events).
func fdCar(n int) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n))
	mh, _ := multihash.Sum(b[:], multihash.SHA2_256, -1)
	return cid.NewCidV1(0x0202, mh).String()
}

func fdPiece(n int, size uint64) piece.Commitment {
	sum := sha256.Sum256([]byte(fmt.Sprintf("piece-%d", n)))
	sum[31] &= 0x3f
	return piece.Commitment{Root: sum, Padded: piece.PaddedSize(size), Payload: size}
}

// fdReplicated is a realistic car.replicated as producers publish it: like
// testutil.Replicated, with a v2 piece and a source object.
func fdReplicated(n int, size uint64, withPiece bool) *CarReplicated {
	c := fdCar(n)
	sum := md5.Sum([]byte(c))
	e := &CarReplicated{
		Car: c, Size: size, MD5: hex.EncodeToString(sum[:]),
		URLs:         []string{"https://carpark.example/" + c + "/" + c + ".car"},
		ReplicatedAt: "2026-11-22T12:00:00Z",
		Source:       json.RawMessage(`{"bucket":"carpark","key":"` + c + `.car","region":"eu-west-1"}`),
	}
	if withPiece {
		e.Piece = fdPiece(n, size).MustV2().String()
	}
	return e
}

// fdPieces are piece CID v2 strings.
var fdPieces = func() []string {
	var out []string
	for n := range 8 {
		out = append(out, fdPiece(n, uint64(1000+n*777)).MustV2().String())
	}
	return out
}()

// fdString is a random string, sometimes a piece CID.
func fdString(r *rand.Rand) string { return mutate.String(r, fdPieces) }

func fdEncode(t testing.TB, ev Event) []byte {
	t.Helper()
	data, err := Encode(ev)
	if err != nil {
		t.Fatalf("encode %s: %v", fdShow(ev), err)
	}
	return data
}

// fdSource is a random source in the bytes a user may send: compact,
// pretty, with escapes, invalid UTF-8 or odd numbers.
func fdSource(r *rand.Rand) []byte {
	switch r.IntN(7) {
	case 0:
		return []byte(`{"bucket":"carpark","key":"a/b.car","etag":"\"x\"","n":[1,2.5,-3e2],"ok":true,"z":null}`)
	case 1:
		return []byte("{\"k\":\"\xff\xfe ok\",\"e\":\"\\u00e9\\ud800\"}")
	case 2:
		return []byte([]string{`null`, `0`, `"s"`, `[]`, `{}`, `-1.5E+3`, `{"a":{"b":[{"c":[]}]}}`,
			"{ \"space\" :\t\"did:key:x\" ,\n \"n\" : [ 1 , 2 ] }", `[ ]`, `{ }`, `-0`, `0.0e-0`}[r.IntN(12)])
	}
	data, err := json.Marshal(mutate.Value(r, 0, fdString))
	if err != nil {
		panic(err)
	}
	if r.IntN(3) == 0 {
		var b bytes.Buffer
		if json.Indent(&b, data, " ", "\t") == nil {
			data = b.Bytes()
		}
	}
	return data
}

// fdMember is one key and its raw value.
type fdMember struct{ key, val string }

// fdQuote writes s as a JSON string: usually as encoding/json does,
// sometimes with HTML left alone, sometimes raw (maybe invalid JSON).
func fdQuote(r *rand.Rand, s string) string {
	switch r.IntN(6) {
	case 0:
		return `"` + s + `"`
	case 1:
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		enc.Encode(s)
		return strings.TrimSuffix(b.String(), "\n")
	}
	b, _ := json.Marshal(s)
	return string(b)
}

func fdNumber(r *rand.Rand, n uint64) string {
	switch r.IntN(12) {
	case 0:
		return []string{"null", "-1", "-0", "1.0", "1e3", "01", `"1"`, "true", "18446744073709551616",
			"99999999999999999999", "9223372036854775808", "1E2", "0.5", "[]", "{}", "nul"}[r.IntN(16)]
	case 1:
		return strconv.FormatUint(n%10, 10)
	}
	return strconv.FormatUint(n, 10)
}

// fdMembers are the members of a random car.replicated or car.piece, or
// now and then of another event.
func fdMembers(r *rand.Rand) []fdMember {
	var ms []fdMember
	add := func(k, v string) { ms = append(ms, fdMember{k, v}) }
	maybe := func() bool { return r.IntN(4) != 0 }
	typ := TypeCarReplicated
	switch r.IntN(10) {
	case 0, 1:
		typ = TypeCarPiece
	case 2:
		typ = []string{TypeCarInvalid, TypeTick, TypeDealReport, "car.sealed", "Car.Replicated", "", "car.replicated "}[r.IntN(7)]
	}
	if maybe() || r.IntN(2) == 0 {
		v := `"` + typ + `"`
		switch r.IntN(20) {
		case 0:
			v = `"car\u002ereplicated"`
		case 1:
			v = "null"
		case 2:
			v = "1"
		}
		add("type", v)
	}
	if maybe() || r.IntN(2) == 0 {
		v := "1"
		if r.IntN(6) == 0 {
			v = []string{"0", "2", "null", "1.0", `"1"`, "-1", "01", "1e0", "10"}[r.IntN(9)]
		}
		add("version", v)
	}
	if maybe() {
		add("car", fdQuote(r, []string{fdCar(r.IntN(100)), fdString(r)}[r.IntN(2)]))
	}
	if maybe() {
		add("piece", fdQuote(r, []string{fdPiece(r.IntN(8), 5000).MustV2().String(), fdString(r)}[r.IntN(2)]))
	}
	if maybe() {
		add("pieceSize", fdNumber(r, mutate.Uint(r)))
	}
	if typ != TypeCarPiece || r.IntN(8) == 0 {
		if maybe() {
			add("size", fdNumber(r, mutate.Uint(r)))
		}
		if maybe() {
			add("md5", fdQuote(r, fdString(r)))
		}
		if maybe() {
			var us []string
			for range r.IntN(4) {
				if r.IntN(8) == 0 {
					us = append(us, "null")
				} else {
					us = append(us, fdQuote(r, fdString(r)))
				}
			}
			v := "[" + strings.Join(us, ",") + "]"
			if r.IntN(8) == 0 {
				v = []string{"null", `"x"`, "{}", "[1]"}[r.IntN(4)]
			}
			add("urls", v)
		}
		if maybe() {
			add("replicatedAt", fdQuote(r, []string{"2026-11-22T12:00:00Z", fdString(r)}[r.IntN(2)]))
		}
		if maybe() {
			add("source", string(fdSource(r)))
		}
	}
	for _, m := range []string{"reason", "time", "aggregate"} {
		if typ != TypeCarReplicated && typ != TypeCarPiece && maybe() {
			add(m, fdQuote(r, fdString(r)))
		}
	}
	r.Shuffle(len(ms), func(i, j int) { ms[i], ms[j] = ms[j], ms[i] })
	return ms
}

// fdHostile edits members: unknown, upper-case, escaped and repeated
// keys, nulls, dropped members.
func fdHostile(r *rand.Rand, ms []fdMember) []fdMember {
	for range r.IntN(3) {
		if len(ms) == 0 {
			break
		}
		i := r.IntN(len(ms))
		if ms[i].key == "" {
			continue
		}
		switch r.IntN(7) {
		case 0:
			ms = append(ms, fdMember{[]string{"extra", "Source", "x-trace", "", "pieceV1"}[r.IntN(5)], `{"a":[1,"b"]}`})
		case 1:
			ms[i].key = strings.ToUpper(ms[i].key[:1]) + ms[i].key[1:]
		case 2:
			ms[i].key = strings.ToUpper(ms[i].key)
		case 3:
			ms[i].key = `\u00` + strconv.FormatInt(int64(ms[i].key[0]), 16) + ms[i].key[1:]
		case 4:
			ms = append(ms, fdMember{ms[i].key, []string{ms[i].val, "null", `"other"`, "7"}[r.IntN(4)]})
		case 5:
			ms[i].val = "null"
		case 6:
			ms = append(ms[:i], ms[i+1:]...)
		}
	}
	return ms
}

// fdWrite joins members into an object, compact or with whitespace.
func fdWrite(r *rand.Rand, ms []fdMember) []byte {
	ws := func() string { return "" }
	if r.IntN(3) == 0 {
		ws = func() string { return []string{"", "", " ", "\n ", "\t", "\r\n", "  "}[r.IntN(7)] }
	}
	var b strings.Builder
	b.WriteString(ws() + "{")
	for i, m := range ms {
		if i > 0 {
			b.WriteString(ws() + ",")
		}
		b.WriteString(ws() + `"` + m.key + `"` + ws() + ":" + ws() + m.val)
	}
	b.WriteString(ws() + "}" + ws())
	return []byte(b.String())
}

// fdEvent is a random event marshalled by Encode.
func fdEvent(r *rand.Rand) []byte {
	var ev Event
	switch r.IntN(4) {
	case 0:
		ev = &CarPiece{Car: fdString(r), Piece: fdString(r), PieceSize: mutate.Uint(r)}
	case 1:
		ev = []Event{&CarInvalid{Car: fdString(r), Reason: fdString(r)}, &Tick{Time: time.Unix(r.Int64N(1e10), 0)},
			&AggregateClose{Aggregate: mutate.Uint(r), By: fdString(r)}, &DealReport{Aggregate: fdString(r), Status: StatusActive}}[r.IntN(4)]
	default:
		e := &CarReplicated{Car: fdString(r), Size: mutate.Uint(r), MD5: fdString(r), Piece: fdString(r),
			PieceSize: mutate.Uint(r), ReplicatedAt: fdString(r)}
		if r.IntN(3) != 0 {
			e.Source = fdSource(r)
		}
		switch r.IntN(4) {
		case 0:
		case 1:
			e.URLs = []string{}
		default:
			for range 1 + r.IntN(3) {
				e.URLs = append(e.URLs, fdString(r))
			}
		}
		ev = e
	}
	data, err := Encode(ev)
	if err != nil {
		panic(err)
	}
	return data
}

// fdRandom is a random input: a marshalled event, or members written out
// by hand, hostile or not.
func fdRandom(r *rand.Rand) []byte {
	switch r.IntN(4) {
	case 0:
		return fdEvent(r)
	case 1:
		return fdWrite(r, fdHostile(r, fdMembers(r)))
	}
	return fdWrite(r, fdMembers(r))
}

func TestDecodeFastEqualsJSONOnRandomEvents(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	n, fast := 30000, 0
	if testing.Short() {
		n = 3000
	}
	kinds := map[string]int{}
	for range n {
		data := fdRandom(r)
		if fdAgree(t, data) {
			fast++
			ev, _ := decodeFast(data)
			kinds[ev.Kind()]++
		}
	}
	// The generator is hostile, but a fair share must still take the
	// fast path, of both types, or it is not being tested.
	if fast < n/10 || kinds[TypeCarReplicated] < n/20 || kinds[TypeCarPiece] < n/100 {
		t.Fatalf("fast path took %d of %d inputs (%v)", fast, n, kinds)
	}
	t.Logf("fast path took %d of %d random inputs (%v)", fast, n, kinds)
}

func TestDecodeFastEqualsJSONOnEdgeCases(t *testing.T) {
	typical := string(fdEncode(t, fdReplicated(1, 1_000_000, true)))
	cr := `{"type":"car.replicated","version":1`
	cp := `{"type":"car.piece","version":1`
	cases := []string{
		``, ` `, `null`, `[]`, `{}`, `{`, `}`, `"x"`, `0`, `{"type":"car.replicated"}`, `{"version":1}`,
		cr + `}`, cp + `}`, cr + `,}`, cr + `}x`, cr + `}{}`, cr + `}}`, cr + "} \n\t\r", " \n\t\r" + cr + "}",
		"{ \"type\" : \"car.replicated\" ,\n\"version\"\t:\r1 }", cr + "\v}", cr + "\u00a0}",
		`{"version":1,"type":"car.replicated"}`, `{"version":2,"type":"car.replicated"}`,
		`{"type":"car.replicated","version":0}`, `{"type":"car.replicated","version":2}`,
		`{"type":"car.replicated","version":null}`, `{"type":"car.replicated","version":"1"}`,
		`{"type":"car.replicated","version":1.0}`, `{"type":"car.replicated","version":1e0}`,
		`{"type":"car.replicated","version":-1}`, `{"type":"car.replicated","version":01}`,
		`{"type":"car.replicated","version":9223372036854775808}`, `{"type":"car.replicated","version":1,"version":1}`,
		`{"type":"car.replicated","type":"car.replicated","version":1}`, `{"TYPE":"car.replicated","version":1}`,
		`{"Type":"car.replicated","version":1}`, `{"type":"Car.Replicated","version":1}`, `{"type":"car.replicated ","version":1}`,
		`{"type":"car\u002ereplicated","version":1}`, `{"\u0074ype":"car.replicated","version":1}`,
		`{"type":null,"version":1}`, `{"type":1,"version":1}`, `{"type":"car.sealed","version":1}`,
		`{"type":"tick","version":1,"time":"2026-11-22T12:00:00Z"}`, `{"type":"car.invalid","version":1,"car":"x"}`,
		cr + `,"car":null,"size":null,"md5":null,"urls":null,"piece":null,"pieceSize":null,"replicatedAt":null,"source":null}`,
		cr + `,"size":0}`, cr + `,"size":18446744073709551615}`, cr + `,"size":18446744073709551616}`,
		cr + `,"size":-0}`, cr + `,"size":1.5}`, cr + `,"size":1e3}`, cr + `,"size":"1"}`, cr + `,"size":nul}`,
		cr + `,"size":nullx}`, cr + `,"size" : 7 }`, cr + `,"size":7,"SIZE":8}`, cr + `,"Size":7}`,
		cr + `,"urls":[]}`, cr + `,"urls":[ ]}`, cr + `,"urls":[null]}`, cr + `,"urls":["a",null,"b"]}`, cr + `,"urls":["a",]}`,
		cr + `,"urls":"a"}`, cr + `,"urls":[1]}`, cr + `,"urls":[ "a" , "b" ]}`, cr + `,"urls":{}}`,
		cr + `,"car":"a\"b"}`, cr + `,"car":"a\u003cb"}`, cr + `,"car":"\ud800"}`, cr + "\"car\":\"\xff\"}",
		cr + ",\"car\":\"\x01\"}", cr + ",\"car\":\"\x7f\"}", cr + ",\"car\":\"é世😀\"}", cr + ",\"car\":\"\xed\xa0\x80\"}",
		cr + `,"car":"unterminated}`, cr + `,"car":}`, cr + `,"car"}`, cr + `,"car":"a""b"}`,
		cr + `,"source":null}`, cr + `,"source": null }`, cr + `,"source":"x"}`, cr + `,"source":-0.0e-0}`,
		cr + `,"source":01}`, cr + `,"source":{"a" :1}}`, cr + `,"source":[1,]}`, cr + `,"source":{"a":1,}}`,
		cr + `,"source":"\x"}`, cr + `,"source":"\u12"}`, cr + `,"source":tru}`, cr + `,"source":1.}`,
		cr + `,"source":1e}`, cr + `,"source":-}`, cr + `,"source":- 1}`, cr + `,"source":"\ u0041"}`,
		cr + `,"source":{ "space" : "did:key:x" , "n" : [ 1 , 2 ] } }`, cr + "\n,\"source\":\n[\n]\n}",
		cr + `,"source":{"a":1},"source":{"b":2}}`, cr + `,"Source":{}}`, cr + `,"source":{"a":1}`,
		cr + `,"source":` + strings.Repeat("[", 64) + strings.Repeat("]", 64) + `}`,
		cr + `,"source":` + strings.Repeat("[", 65) + strings.Repeat("]", 65) + `}`,
		cr + `,"source":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`,
		cr + `,"extra":1}`, cr + `,"":1}`, cr + `,"pieceV1":"x"}`, cr + `,"piecesize":1}`,
		cp + `,"car":"c","piece":"p","pieceSize":2048}`, cp + `,"car":"c","size":1}`, cp + `,"car":"c","source":{}}`,
		cp + `,"car":"c","urls":[]}`, cp + `,"Piece":"p"}`, cp + `,"piece":"p","piece":"q"}`, cp + `,"pieceSize":-1}`,
		typical, typical[:len(typical)-1], typical + " ", typical + "\n", strings.Replace(typical, `"size"`, `"size" `, 1),
		strings.ReplaceAll(typical, ",", " ,\n "), strings.ReplaceAll(typical, ":", ": "),
	}
	for _, c := range cases {
		fdAgree(t, []byte(c))
	}
}

func TestDecodeFastEqualsJSONOnMutations(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	seeds := fdSeeds(t)
	for range 100 {
		seeds = append(seeds, fdRandom(r))
	}
	mutate.Mutations(t, r, seeds, 100000, func(data []byte) bool { return fdAgree(t, data) })
}

// fdDocExamples are the events docs/events.md shows: its json blocks (as
// written, pretty) and the bodies of its nats pub commands.
func fdDocExamples(t testing.TB) [][]byte {
	md, err := os.ReadFile(filepath.Join("..", "docs", "events.md"))
	if err != nil {
		t.Fatalf("read docs/events.md: %v", err)
	}
	var out [][]byte
	var block *strings.Builder
	for _, l := range strings.Split(string(md), "\n") {
		trimmed := strings.TrimSpace(l)
		switch {
		case block == nil && trimmed == "```json":
			block = new(strings.Builder)
		case block != nil && trimmed == "```":
			out = append(out, []byte(block.String()))
			block = nil
		case block != nil:
			block.WriteString(l + "\n")
		case strings.HasPrefix(trimmed, "nats pub "):
			if _, body, ok := strings.Cut(trimmed, " '"); ok {
				body, _, _ = strings.Cut(body, "'")
				out = append(out, []byte(body))
			}
		}
	}
	if len(out) < 10 {
		t.Fatalf("found only %d examples in docs/events.md", len(out))
	}
	return out
}

// fdPublished are realistic events as jetlog.Publisher (and so ferry
// publish) puts them on the input log: the bytes of Encode.
func fdPublished(t testing.TB) [][]byte {
	var out [][]byte
	msg := func(ev Event) {
		data, err := Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, data)
	}
	for n := range 4 {
		size := uint64(1000 + n*999_777)
		msg(fdReplicated(n, size, true))
		msg(fdReplicated(n, size, false))
		noSource := fdReplicated(n, size, true)
		noSource.Source = nil
		msg(noSource)
		v1 := fdReplicated(n, size, false)
		p := fdPiece(n, size)
		v1.Piece, v1.PieceSize, v1.Source = p.V1().String(), p.Padded, json.RawMessage(`{"space":"did:key:z6Mk"}`)
		v1.URLs = append(v1.URLs, "https://mirror.example/"+v1.Car+".car")
		msg(v1)
		msg(&CarPiece{Car: fdCar(n), Piece: p.MustV2().String()})
		msg(&CarPiece{Car: fdCar(n), Piece: p.V1().String(), PieceSize: p.Padded})
	}
	// ferry publish reads a user's line (pretty, HTML in the source) into
	// a CarReplicated and publishes that.
	line := "{ \"car\": \"" + fdCar(9) + "\", \"size\": 5000, \"md5\": \"9e107d9d372bb6826bd81d3542a419d6\",\n" +
		" \"urls\": [ \"https://a.example/x.car?a=1&b=<2>\" ], \"source\": { \"note\": \"a < b & c\", \"n\": [ 1, 2 ] } }"
	var ev CarReplicated
	if err := json.Unmarshal([]byte(line), &ev); err != nil {
		t.Fatal(err)
	}
	msg(&ev)
	return out
}

// fdSeeds are the docs examples, published events and random marshalled
// events.
func fdSeeds(t testing.TB) [][]byte {
	seeds := append(fdDocExamples(t), fdPublished(t)...)
	r := rand.New(rand.NewPCG(5, 6))
	for range 20 {
		seeds = append(seeds, fdEvent(r))
	}
	return seeds
}

func TestDecodeFastTakesPublishedAndDocumentedEvents(t *testing.T) {
	for _, data := range fdPublished(t) {
		if !fdAgree(t, data) {
			t.Errorf("fast path refused a published event: %s", data)
		}
	}
	kinds := map[string]int{}
	for _, data := range fdDocExamples(t) {
		fast := fdAgree(t, data)
		ev, err := decodeJSON(data)
		if err != nil {
			continue // not an event: an aggregate-log or report example
		}
		if k := ev.Kind(); k == TypeCarReplicated || k == TypeCarPiece {
			if !fast {
				t.Errorf("fast path refused a documented %s: %s", k, data)
			}
			kinds[k]++
		}
	}
	if kinds[TypeCarReplicated] < 6 || kinds[TypeCarPiece] < 2 {
		t.Errorf("docs examples tried: %v", kinds)
	}
}

// FuzzDecodeFast holds Decode (and its fast path) to decodeJSON on any
// bytes. Seeds: docs/events.md's examples, published events, random
// events and FuzzDecode's corpus.
func FuzzDecodeFast(f *testing.F) {
	for _, s := range fdSeeds(f) {
		f.Add(s)
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzDecode", "*"))
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		_, lit, _ := strings.Cut(string(b), "[]byte(")
		if s, err := strconv.Unquote(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(lit), ")"))); err == nil {
			f.Add([]byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fdAgree(t, data)
	})
}

func BenchmarkDecode(b *testing.B) {
	for _, c := range []struct {
		name string
		ev   Event
	}{
		{"car.replicated", fdReplicated(1, 1_000_000, true)},
		{"car.piece", &CarPiece{Car: fdCar(1), Piece: fdPiece(1, 1_000_000).MustV2().String()}},
	} {
		data := fdEncode(b, c.ev)
		if _, ok := decodeFast(data); !ok {
			b.Fatalf("fast path refuses %s", data)
		}
		b.Run(c.name+"/json", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := decodeJSON(data); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(c.name+"/fast", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := Decode(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Encode writes a car.replicated by hand; it must be json.Marshal's bytes
// (or its error) for any event, hostile strings and sources included.
func TestEncodeCarReplicatedEqualsMarshal(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	n := 20000
	if testing.Short() {
		n = 2000
	}
	check := func(e *CarReplicated) {
		t.Helper()
		got, gerr := Encode(e) // sets the header
		want, werr := json.Marshal(e)
		if (gerr != nil) != (werr != nil) || !bytes.Equal(got, want) {
			t.Fatalf("%s:\nEncode       %q %v\njson.Marshal %q %v", fdShow(e), got, gerr, want, werr)
		}
	}
	for range n {
		e := &CarReplicated{Car: fdString(r), Size: mutate.Uint(r), MD5: fdString(r), URLs: []string{}}
		if r.IntN(2) == 0 {
			e.Piece, e.PieceSize = fdString(r), mutate.Uint(r)
		}
		if r.IntN(2) == 0 {
			e.ReplicatedAt = fdString(r)
		}
		switch r.IntN(4) {
		case 0:
			e.URLs = nil
		case 1:
		default:
			for range 1 + r.IntN(3) {
				e.URLs = append(e.URLs, fdString(r))
			}
		}
		if r.IntN(3) != 0 {
			e.Source = fdSource(r)
		}
		check(e)
	}
	check(fdReplicated(1, 1_000_000, true))
	check(&CarReplicated{Car: "<&>\u2028", Source: json.RawMessage(`{"a": <>}`)})
	check(&CarReplicated{Source: json.RawMessage(" [ \"<&>\u2029\" ] ")})
}
