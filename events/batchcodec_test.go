package events_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/internal/mutate"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
)

// bcAgree checks that events.DecodeBatch makes of data what json.Unmarshal makes
// of it in a fresh events.Batch, with the same error, and that the fast path, when
// it takes data, agrees too. It reports whether the fast path took data.
func bcAgree(t testing.TB, data []byte) bool {
	t.Helper()
	var want events.Batch
	werr := json.Unmarshal(data, &want)

	got := bcGarbage()
	gerr := events.DecodeBatch(data, &got)
	if (werr == nil) != (gerr == nil) || werr != nil && werr.Error() != gerr.Error() {
		t.Fatalf("%q:\nDecodeBatch error %v\njson.Unmarshal error %v", data, gerr, werr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q:\nDecodeBatch    %s\njson.Unmarshal %s", data, bcShow(got), bcShow(want))
	}

	probe := bcGarbage()
	fast := events.DecodeBatchFast(data, &probe)
	switch {
	case fast && werr != nil:
		t.Fatalf("%q: fast path took what json.Unmarshal refuses: %v", data, werr)
	case fast && !reflect.DeepEqual(probe, want):
		t.Fatalf("%q:\nfast path      %s\njson.Unmarshal %s", data, bcShow(probe), bcShow(want))
	case !fast && !reflect.DeepEqual(probe, bcGarbage()):
		t.Fatalf("%q: fast path gave up but changed b: %s", data, bcShow(probe))
	}
	return fast
}

// bcGarbage is a events.Batch full of data, to show events.DecodeBatch resets b.
func bcGarbage() events.Batch {
	return events.Batch{
		In:  7,
		Now: time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC),
		Decisions: []events.Decision{{
			Type: "x", Car: "y", Record: &events.Record{Size: 1, MD5: "m", URLs: []string{"u"}, Source: json.RawMessage(`{}`)},
			Aggregate: 3, First: -1, Deals: []events.Deal{{Provider: "f01"}}, At: time.Unix(5, 0),
		}},
	}
}

func bcShow(b events.Batch) string {
	s := fmt.Sprintf("%#v", b)
	for _, d := range b.Decisions {
		if d.Record != nil {
			s += fmt.Sprintf("\n  record %#v (source %q)", *d.Record, d.Record.Source)
		}
	}
	return s
}

var bcTypes = []string{
	events.DecCarQueued, events.DecCarAdded, events.DecCarRejected, events.DecInputIgnored, events.DecAggClock, events.DecAggReady,
	events.DecAggOffered, events.DecAggOfferFailed, events.DecAggDeals, events.DecAggFailed, events.DecCarsRequeued,
}

// bcPieces are piece CID v2 strings as the fold writes them.
// bcString is a random string, sometimes a piece CID.
func bcString(r *rand.Rand) string { return mutate.String(r, bcPieces) }

var bcPieces = func() []string {
	var out []string
	for n := range 8 {
		out = append(out, testutil.FakePiece(n, uint64(1000+n*777)).MustV2().String())
	}
	return out
}()

func bcTime(r *rand.Rand) time.Time {
	if r.IntN(3) == 0 {
		return time.Time{}
	}
	t := time.Unix(r.Int64N(200*365*86400)-50*365*86400, 0)
	switch r.IntN(3) {
	case 1:
		t = t.Add(time.Duration(r.IntN(1e9)))
	case 2:
		t = t.Add(time.Duration(r.IntN(1000)) * time.Millisecond)
	}
	switch r.IntN(4) {
	case 0:
		return t.UTC()
	case 1:
		return t.Local()
	case 2:
		return t.In(time.FixedZone("", (r.IntN(28*60)-14*60)*60))
	}
	return t.In(time.FixedZone("XST", (r.IntN(24)-12)*3600))
}

func bcInt(r *rand.Rand) int {
	switch r.IntN(5) {
	case 0:
		return 0
	case 1:
		return -r.IntN(1000)
	case 2:
		return math.MaxInt - r.IntN(3)
	case 3:
		return math.MinInt + r.IntN(3)
	}
	return r.IntN(1000)
}

func bcSource(r *rand.Rand) json.RawMessage {
	switch r.IntN(6) {
	case 0:
		return nil
	case 1:
		return json.RawMessage(`{"bucket":"carpark","key":"a/b.car","etag":"\"x\"","n":[1,2.5,-3e2],"ok":true,"z":null}`)
	case 2:
		// Strings JSON does not check: invalid UTF-8 stays as it is.
		return json.RawMessage("{\"k\":\"\xff\xfe ok\",\"e\":\"\\u00e9\\ud800\"}")
	case 3:
		return json.RawMessage([]string{`null`, `0`, `"s"`, `[]`, `{}`, `-1.5E+3`, `{"a":{"b":[{"c":[]}]}}`}[r.IntN(7)])
	}
	data, err := json.Marshal(mutate.Value(r, 0, bcString))
	if err != nil {
		panic(err)
	}
	return data
}

func bcRecord(r *rand.Rand) *events.Record {
	if r.IntN(3) == 0 {
		return nil
	}
	rec := &events.Record{Size: mutate.Uint(r), MD5: bcString(r), ReplicatedAt: bcString(r), Source: bcSource(r)}
	switch r.IntN(4) {
	case 0:
	case 1:
		rec.URLs = []string{}
	default:
		for range 1 + r.IntN(3) {
			rec.URLs = append(rec.URLs, bcString(r))
		}
	}
	return rec
}

func bcDecision(r *rand.Rand) events.Decision {
	d := events.Decision{Type: bcTypes[r.IntN(len(bcTypes))]}
	if r.IntN(10) == 0 {
		d.Type = bcString(r)
	}
	// Each field is set half the time, whatever the type.
	maybe := func() bool { return r.IntN(2) == 0 }
	if maybe() {
		d.Car = bcString(r)
	}
	if maybe() {
		d.Record = bcRecord(r)
	}
	if maybe() {
		d.Piece = bcString(r)
	}
	if maybe() {
		d.PieceV1 = bcString(r)
	}
	if maybe() {
		d.PieceSize = mutate.Uint(r)
	}
	if maybe() {
		d.Aggregate = mutate.Uint(r)
	}
	if maybe() {
		d.From = mutate.Uint(r)
	}
	if maybe() {
		d.First = bcInt(r)
	}
	if maybe() {
		d.Count = bcInt(r)
	}
	if maybe() {
		d.Payload = mutate.Uint(r)
	}
	if maybe() {
		d.Closed = []string{events.ClosedFull, events.ClosedMaxWait, events.ClosedForced, bcString(r)}[r.IntN(4)]
	}
	if maybe() {
		d.Status = []string{events.StatusPublished, events.StatusActive, events.StatusFailed, bcString(r)}[r.IntN(4)]
	}
	if r.IntN(5) == 0 {
		for range r.IntN(3) {
			d.Deals = append(d.Deals, events.Deal{Provider: bcString(r), DealID: mutate.Uint(r), ExpirationEpoch: int64(bcInt(r))})
		}
	}
	if maybe() {
		d.Reason = bcString(r)
	}
	d.At = bcTime(r)
	return d
}

func bcBatch(r *rand.Rand) events.Batch {
	b := events.Batch{In: mutate.Uint(r), Now: bcTime(r)}
	switch r.IntN(8) {
	case 0:
	case 1:
		b.Decisions = []events.Decision{}
	default:
		for range 1 + r.IntN(5) {
			b.Decisions = append(b.Decisions, bcDecision(r))
		}
	}
	return b
}

// bcTypical is a batch the fold writes: a CAR added with its record, or a
// closed aggregate.
func bcTypical(n int) events.Batch {
	car := testutil.CarCID(n).String()
	p := testutil.FakePiece(n, 1_000_000)
	rec := &events.Record{
		Size: 1_000_000, MD5: "9e107d9d372bb6826bd81d3542a419d6",
		URLs:         []string{"https://carpark.example/" + car + "/" + car + ".car"},
		ReplicatedAt: "2026-11-22T12:00:00Z",
		Source:       json.RawMessage(`{"bucket":"carpark","key":"` + car + `.car","region":"eu-west-1"}`),
	}
	return events.Batch{
		In:  uint64(1000 + n),
		Now: time.Date(2026, 11, 22, 12, 0, 1, 123456789, time.UTC),
		Decisions: []events.Decision{{
			Type: events.DecCarAdded, Car: car, Record: rec, Piece: p.MustV2().String(),
			PieceSize: p.Padded, Aggregate: 42,
		}},
	}
}

func bcReady(n int) events.Batch {
	p := testutil.FakePiece(n, 30<<30)
	return events.Batch{
		In:  uint64(5000 + n),
		Now: time.Date(2026, 11, 22, 13, 0, 0, 0, time.UTC),
		Decisions: []events.Decision{{
			Type: events.DecAggReady, Aggregate: 42, Piece: p.MustV2().String(), PieceV1: p.V1().String(),
			PieceSize: p.Padded, Payload: 30 << 30, Count: 1234, Closed: events.ClosedFull,
		}},
	}
}

func bcMarshal(t testing.TB, b events.Batch) []byte {
	t.Helper()
	data, err := json.Marshal(b)
	if err != nil {
		t.Fatalf("marshal %s: %v", bcShow(b), err)
	}
	return data
}

func TestDecodeBatchEqualsUnmarshalOnMarshalledBatches(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	n, fast := 10000, 0
	if testing.Short() {
		n = 1000
	}
	for range n {
		if bcAgree(t, bcMarshal(t, bcBatch(r))) {
			fast++
		}
	}
	// The generator is hostile (escapes, negative ints, deals), but a fair
	// share must still take the fast path, or it is not being tested.
	if fast < n/20 {
		t.Fatalf("fast path took %d of %d batches", fast, n)
	}
	t.Logf("fast path took %d of %d random batches", fast, n)
}

func TestDecodeBatchEqualsUnmarshalOnEdgeCases(t *testing.T) {
	typical := string(bcMarshal(t, bcTypical(1)))
	cases := []string{
		``, ` `, `null`, `[]`, `{}`, `{`, `}`, `"x"`, `0`,
		`{"in":1}`, `{"in":1,"decisions":[]}`, `{"in":1,"decisions":null}`, `{"decisions":[null]}`,
		`{"decisions":[{}]}`, `{"decisions":[{},{"type":"car.added"}]}`,
		`{"in":0}`, `{"in":01}`, `{"in":-0}`, `{"in":-1}`, `{"in":1.0}`, `{"in":1e3}`, `{"in":1E3}`,
		`{"in":18446744073709551615}`, `{"in":18446744073709551616}`, `{"in":99999999999999999999}`,
		`{"in":"1"}`, `{"in":true}`, `{"in":null}`, `{"in":nul}`, `{"in":nullx}`,
		`{"in":1,"in":2}`, `{"IN":1}`, `{"In":1}`, `{"\u0069n":1}`, `{"in":1,"x":2}`, `{"in":1,}`,
		` {"in":1}`, `{"in":1} `, "{\"in\":1}\n", `{ "in":1}`, `{"in" :1}`, `{"in": 1}`, `{"in":1 }`,
		`{"in":1}{}`, `{"in":1}x`, `{"in":1}}`,
		`{"now":"2026-11-22T12:00:00Z"}`, `{"now":"2026-11-22T12:00:00.5+01:00"}`,
		`{"now":"2026-11-22T12:00:00.123456789-07:30"}`, `{"now":"2026-11-22 12:00:00Z"}`,
		`{"now":"2026-11-22T12:00:00z"}`, `{"now":"2026-11-22T12:00:00"}`, `{"now":""}`, `{"now":null}`,
		`{"now":"2026-11-22T12:00:00\u005a"}`, `{"now":1}`, `{"now":"0000-01-01T00:00:00Z"}`,
		`{"now":"2026-11-22T24:00:00Z"}`, `{"now":"2026-02-30T12:00:00Z"}`, `{"now":"2026-11-22T12:00:00+24:00"}`,
		`{"decisions":[{"type":"car.added","first":-1}]}`, `{"decisions":[{"count":9223372036854775807}]}`,
		`{"decisions":[{"count":9223372036854775808}]}`, `{"decisions":[{"first":1,"first":1}]}`,
		`{"decisions":[{"type":"a\"b"}]}`, `{"decisions":[{"type":"a\u003cb"}]}`, `{"decisions":[{"type":"\ud800"}]}`,
		"{\"decisions\":[{\"type\":\"\xff\"}]}", "{\"decisions\":[{\"type\":\"\x01\"}]}", "{\"decisions\":[{\"type\":\"\x7f\"}]}",
		`{"decisions":[{"type":null,"car":null,"record":null,"piece":null,"reason":null,"at":null,"aggregate":null}]}`,
		`{"decisions":[{"record":{}}]}`, `{"decisions":[{"record":{"urls":[]}}]}`, `{"decisions":[{"record":{"urls":null}}]}`,
		`{"decisions":[{"record":{"urls":[null]}}]}`, `{"decisions":[{"record":{"urls":["a",null,"b"]}}]}`,
		`{"decisions":[{"record":{"size":1},"record":{"md5":"x"}}]}`, `{"decisions":[{"record":{"source":null}}]}`,
		`{"decisions":[{"record":{"source":"x"}}]}`, `{"decisions":[{"record":{"source":-0.0e-0}}]}`,
		`{"decisions":[{"record":{"source":01}}]}`, `{"decisions":[{"record":{"source":{"a" :1}}}]}`,
		`{"decisions":[{"record":{"source":[1,]}}]}`, `{"decisions":[{"record":{"source":{"a":1,}}}]}`,
		`{"decisions":[{"record":{"source":"\x"}}]}`, `{"decisions":[{"record":{"source":"\u12"}}]}`,
		`{"decisions":[{"record":{"source":tru}}]}`, `{"decisions":[{"record":{"source":1.}}]}`,
		`{"decisions":[{"record":{"source":1e}}]}`, `{"decisions":[{"record":{"source":-}}]}`,
		`{"decisions":[{"record":{"source":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}}]}`,
		`{"decisions":[{"record":{"source":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}}]}`,
		`{"decisions":[{"record":{"Size":1}}]}`, `{"decisions":[{"record":[]}]}`, `{"decisions":{}}`,
		`{"decisions":[{"deals":[{"provider":"f01","dealId":3}]}]}`, `{"decisions":[{"deals":null}]}`,
		`{"decisions":[{"closed":"full","status":"active"}]}`, `{"decisions":[{"type":"car.added"}]`,
		typical, typical[:len(typical)-1], typical + " ", strings.Replace(typical, `"in"`, `"in" `, 1),
	}
	for _, c := range cases {
		bcAgree(t, []byte(c))
	}
}

func TestDecodeBatchEqualsUnmarshalOnMutations(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var seeds [][]byte
	for n := range 50 {
		seeds = append(seeds, bcMarshal(t, bcBatch(r)), bcMarshal(t, bcTypical(n)), bcMarshal(t, bcReady(n)))
	}
	mutate.Mutations(t, r, seeds, 50000, func(data []byte) bool { return bcAgree(t, data) })
}

func FuzzDecodeBatch(f *testing.F) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, b := range bcCommon(f) {
		f.Add(bcMarshal(f, b))
	}
	for range 20 {
		f.Add(bcMarshal(f, bcBatch(r)))
	}
	f.Add([]byte(`{"in":1,"decisions":[{"type":"aggregate.deals","aggregate":1,"status":"active","deals":[{"provider":"f01","dealId":3,"expirationEpoch":-1}]}]}`))
	f.Add([]byte(`{"in":1,"decisions":[{"type":"cars.requeued","from":2,"first":3,"count":4,"aggregate":5}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		bcAgree(t, data)
	})
}

// bcFastTypes are the decisions the fast path decodes: those of nearly
// every batch.
var bcFastTypes = map[string]bool{
	events.DecCarAdded: true, events.DecCarQueued: true, events.DecCarRejected: true,
	events.DecInputIgnored: true, events.DecAggClock: true, events.DecAggReady: true,
}

// bcCommon are batches of the common decision types as the fold writes
// them: the decisions of bcFastTypes in the batches of the committed
// golden log (aggregator/testdata/golden).
func bcCommon(t testing.TB) []events.Batch {
	data, err := os.ReadFile(filepath.Join("..", "aggregator", "testdata", "golden", "batches.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var out []events.Batch
	for line := range bytes.Lines(data) {
		var b events.Batch
		if err := json.Unmarshal(line, &b); err != nil {
			t.Fatal(err)
		}
		b.Decisions = slices.DeleteFunc(b.Decisions, func(d events.Decision) bool { return !bcFastTypes[d.Type] })
		if len(b.Decisions) > 0 {
			out = append(out, b)
		}
	}
	return out
}

func TestDecodeBatchTakesTheFastPathForCommonDecisions(t *testing.T) {
	want := bcFastTypes
	seen := map[string]bool{}
	batches := bcCommon(t)
	for n := range 3 {
		batches = append(batches, bcTypical(n), bcReady(n))
	}
	for _, b := range batches {
		data := bcMarshal(t, b)
		if !bcAgree(t, data) {
			t.Errorf("fast path refused %s", data)
		}
		var got events.Batch
		if err := events.DecodeBatch(data, &got); err != nil || !reflect.DeepEqual(bcMarshal(t, got), data) {
			t.Errorf("round trip of %s gave %s (%v)", data, bcMarshal(t, got), err)
		}
		for _, d := range b.Decisions {
			seen[d.Type] = true
		}
	}
	for typ := range want {
		if !seen[typ] {
			t.Errorf("no %s batch was tried", typ)
		}
	}
}

func BenchmarkDecodeBatch(b *testing.B) {
	for _, c := range []struct {
		name  string
		batch events.Batch
	}{
		{"car.added", bcTypical(1)},
		{"aggregate.ready", bcReady(1)},
	} {
		data := bcMarshal(b, c.batch)
		if !events.DecodeBatchFast(data, new(events.Batch)) {
			b.Fatalf("fast path refuses %s", data)
		}
		b.Run(c.name+"/json", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				var x events.Batch
				if err := json.Unmarshal(data, &x); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(c.name+"/fast", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				var x events.Batch
				if err := events.DecodeBatch(data, &x); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// A message of several batches gives back each batch as json.Unmarshal
// reads its own encoding, in order, whatever its strings hold (newlines
// included: encoding/json escapes them, so only separators split).
func TestMessagesOfSeveralBatchesSplitIntoTheirBatches(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 500 {
		var (
			msg     []byte
			encoded [][]byte
		)
		for range 1 + r.IntN(20) {
			b := bcBatch(r)
			if r.IntN(4) == 0 {
				b.Decisions = append(b.Decisions, events.Decision{Type: events.DecCarRejected, Reason: "line one\nline two\r\n"})
			}
			data := bcMarshal(t, b)
			encoded = append(encoded, data)
			msg = events.AppendBatch(msg, data)
		}
		var i int
		for data := range events.Batches(msg) {
			if i >= len(encoded) || string(data) != string(encoded[i]) {
				t.Fatalf("batch %d of a message of %d: got %q", i, len(encoded), data)
			}
			i++
		}
		i = 0
		err := events.EachBatch(msg, func(got *events.Batch) error {
			var want events.Batch
			if err := json.Unmarshal(encoded[i], &want); err != nil {
				return err
			}
			if !reflect.DeepEqual(*got, want) {
				return fmt.Errorf("batch %d: got %s, json.Unmarshal says %s", i, bcShow(*got), bcShow(want))
			}
			i++
			return nil
		})
		if err != nil || i != len(encoded) {
			t.Fatalf("EachBatch: %d of %d batches, %v", i, len(encoded), err)
		}
	}
	for _, bad := range []string{"", "\n", `{"in":1,"decisions":[]}` + "\n", "\n" + `{"in":1,"decisions":[]}`} {
		if err := events.EachBatch([]byte(bad), func(*events.Batch) error { return nil }); err == nil {
			t.Errorf("EachBatch(%q): no error", bad)
		}
	}
}

// bcEncodeAgrees checks events.EncodeBatch against json.Marshal: the same bytes
// after what dst held, or an error exactly when json.Marshal fails.
func bcEncodeAgrees(t *testing.T, b events.Batch) {
	t.Helper()
	want, werr := json.Marshal(b)
	prefix := []byte("prefix\n")
	got, gerr := events.EncodeBatch(append([]byte(nil), prefix...), &b)
	if (werr != nil) != (gerr != nil) {
		t.Fatalf("%s: events.EncodeBatch error %v, json.Marshal error %v", bcShow(b), gerr, werr)
	}
	if werr == nil && (!bytes.HasPrefix(got, prefix) || !bytes.Equal(got[len(prefix):], want)) {
		t.Fatalf("%s:\nEncodeBatch  %q\njson.Marshal %q", bcShow(b), got, want)
	}
}

func TestEncodeBatchEqualsMarshal(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	n := 20000
	if testing.Short() {
		n = 2000
	}
	for range n {
		bcEncodeAgrees(t, bcBatch(r))
	}
	for _, b := range bcCommon(t) {
		bcEncodeAgrees(t, b)
	}
	far := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, b := range []events.Batch{
		{},
		{In: 1, Decisions: []events.Decision{}},
		{In: 1, Now: far},
		{In: 1, Decisions: []events.Decision{{Type: events.DecAggClock, At: far}}},
		{In: 1, Decisions: []events.Decision{{Type: events.DecCarAdded, Record: &events.Record{}}}},
		{In: 1, Decisions: []events.Decision{{Type: events.DecCarAdded, Record: &events.Record{Source: json.RawMessage(`{"a": <1>}`)}}}},
		{In: 1, Decisions: []events.Decision{{Type: events.DecCarAdded, Record: &events.Record{Source: json.RawMessage(" {\"a\" : \"<&>\u2028\" } ")}}}},
		{In: 1, Decisions: []events.Decision{{Type: events.DecAggDeals, Deals: []events.Deal{{Provider: "f0<1>", DealID: 7}}}}},
		{In: 1, Decisions: []events.Decision{{Type: "x\u2029\"\\\x01\xff", First: -1, Count: -2}}},
	} {
		bcEncodeAgrees(t, b)
	}
}

func BenchmarkEncodeBatch(b *testing.B) {
	batch := bcTypical(1)
	b.Run("EncodeBatch", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			var err error
			if buf, err = events.EncodeBatch(buf[:0], &batch); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(batch); err != nil {
				b.Fatal(err)
			}
		}
	})
}
