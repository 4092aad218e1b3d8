package spade

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/ferry-dev/ferry/internal/mutate"

	"github.com/ferry-dev/ferry/events"
	"github.com/klauspost/compress/zstd"
)

// fuzzZstd compresses fuzz inputs; EncodeAll is safe for concurrent use.
var fuzzZstd, _ = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))

// FuzzParseOracle holds ParseOracle to its contract on any document, plain
// or zstd: no panic; a refusal wraps ErrBadOracle or ErrTooLarge; the same
// JSON reads the same whether it came compressed or not; and every report
// made from a document is an active deal.report, one deal per contract
// with provider f0<id>, that the fold's decoder reads back.
//
// With compress the fuzzer's bytes are the JSON inside a zstd frame;
// without, they are the body as sent (which may itself start with the zstd
// magic and exercise the decompressor on garbage).
//
// Seed corpus: testdata/fuzz/FuzzParseOracle.
func FuzzParseOracle(f *testing.F) {
	f.Add([]byte(`{}`), false)
	mutate.WriteSeeds(f, "FuzzParseOracle", oracleSeeds(), oracleCompress())
	f.Fuzz(func(t *testing.T, data []byte, compress bool) {
		body := data
		if compress {
			body = fuzzZstd.EncodeAll(data, nil)
		}
		doc, err := ParseOracle(bytes.NewReader(body))
		if compress && !bytes.HasPrefix(data, zstdMagic) {
			plain, perr := ParseOracle(bytes.NewReader(data))
			if (err == nil) != (perr == nil) || !reflect.DeepEqual(doc, plain) {
				t.Fatalf("zstd and plain disagree: %v / %v\n%+v\n%+v", err, perr, doc, plain)
			}
		}
		if err != nil {
			if doc != nil {
				t.Fatalf("document and error: %v", err)
			}
			if !errors.Is(err, ErrBadOracle) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error wraps neither ErrBadOracle nor ErrTooLarge: %v", err)
			}
			return
		}
		reports := doc.Reports()
		withContracts := 0
		for _, r := range doc.ActiveReplicas {
			if len(r.Contracts) > 0 {
				withContracts++
			}
		}
		if len(reports) != withContracts {
			t.Fatalf("%d reports from %d replicas with contracts", len(reports), withContracts)
		}
		for _, rep := range reports {
			if rep.Status != events.StatusActive || len(rep.Deals) == 0 || rep.Type != events.TypeDealReport {
				t.Fatalf("oracle report is not an active report with deals: %+v", rep)
			}
			for _, d := range rep.Deals {
				if !strings.HasPrefix(d.Provider, "f0") {
					t.Fatalf("provider %q", d.Provider)
				}
			}
			enc, err := events.Encode(&rep)
			if err != nil {
				t.Fatalf("oracle report does not encode: %v", err)
			}
			if _, err := events.Decode(enc); err != nil {
				t.Fatalf("oracle report does not decode: %v\n%s", err, enc)
			}
		}
	})
}

func oracleSeeds() [][]byte {
	v1 := fuzzPiece(32 << 30).V1().String()
	doc := fmt.Sprintf(`{"state_epoch": 4500000, "active_replicas": [
 {"piece_cid": %q, "piece_log2_size": 35, "contracts": [
   {"provider_id": 1000, "legacy_market_id": 12, "legacy_market_end_epoch": 6000000},
   {"provider_id": 1001, "legacy_market_id": 13, "legacy_market_end_epoch": 6000001}]},
 {"piece_cid": "baga6ea4seaqnothing", "piece_log2_size": 34, "contracts": []}]}`, v1)
	return [][]byte{
		[]byte(doc),
		[]byte(doc),
		[]byte(`{"state_epoch": 1, "active_replicas": null}`),
		[]byte(`{"state_epoch": "x"}`),
		[]byte(`{"active_replicas": [{"piece_cid": 7}]}`),
		[]byte(`{"active_replicas": [{"contracts": [{"provider_id": 18446744073709551615, "legacy_market_id": 0, "legacy_market_end_epoch": -1}]}]} trailing`),
		fuzzZstd.EncodeAll([]byte(doc), nil)[:20],
		append(append([]byte{}, zstdMagic...), 0x00, 0x58, 0xff, 0xff, 0xff, 0xff),
		[]byte(`[]`),
	}
}

// oracleCompress is the compress argument of each seed.
func oracleCompress() []any {
	return []any{false, true, true, false, true, false, false, false, true}
}
