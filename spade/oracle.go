package spade

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/klauspost/compress/zstd"
)

// MaxOracleSize bounds an oracle document after decompression. Spade's
// full replica list is hundreds of megabytes; a document past this bound
// is refused rather than allowed to exhaust memory.
const MaxOracleSize = 2 << 30

// zstdMagic starts every zstd frame.
var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// Oracle is a Spade-style replica document: the deals known active at an
// epoch, by piece.
//
//	{"state_epoch": 4500000,
//	 "active_replicas": [{"piece_cid": "baga6ea4sea…", "piece_log2_size": 35,
//	   "contracts": [{"provider_id": 1000, "legacy_market_id": 12,
//	                  "legacy_market_end_epoch": 6000000}]}]}
type Oracle struct {
	StateEpoch     int64     `json:"state_epoch"`
	ActiveReplicas []Replica `json:"active_replicas"`
}

// Replica is one piece and the deals that store it.
type Replica struct {
	// PieceCID is the piece CID v1.
	PieceCID      string     `json:"piece_cid"`
	PieceLog2Size int        `json:"piece_log2_size"`
	Contracts     []Contract `json:"contracts"`
}

// Contract is one deal of a replica.
type Contract struct {
	ProviderID           uint64 `json:"provider_id"`
	LegacyMarketID       uint64 `json:"legacy_market_id"`
	LegacyMarketEndEpoch int64  `json:"legacy_market_end_epoch"`
}

// ParseOracle reads an oracle document, plain JSON or zstd-compressed JSON
// (told apart by the zstd magic number). The error wraps ErrBadOracle, or
// ErrTooLarge past MaxOracleSize.
func ParseOracle(r io.Reader) (*Oracle, error) {
	br := bufio.NewReader(r)
	if magic, _ := br.Peek(len(zstdMagic)); bytes.Equal(magic, zstdMagic) {
		dec, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxOracleSize),
			// A small frame may declare a huge window; cap what it makes us allocate.
			zstd.WithDecoderMaxWindow(128<<20), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, fmt.Errorf("%w: zstd: %v", ErrBadOracle, err)
		}
		defer dec.Close()
		return decodeOracle(dec)
	}
	return decodeOracle(br)
}

func decodeOracle(r io.Reader) (*Oracle, error) {
	lr := &limitReader{r: r, left: MaxOracleSize}
	var doc Oracle
	if err := json.NewDecoder(lr).Decode(&doc); err != nil {
		if lr.over {
			return nil, fmt.Errorf("%w: oracle document past %d bytes", ErrTooLarge, MaxOracleSize)
		}
		return nil, fmt.Errorf("%w: %v", ErrBadOracle, err)
	}
	return &doc, nil
}

// limitReader is io.LimitReader that remembers it cut the stream short, so
// a document over the bound is reported as too large, not as bad JSON.
type limitReader struct {
	r    io.Reader
	left int64
	over bool
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		l.over = true
		return 0, ErrTooLarge
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// Reports turns each replica with contracts into an "active" report for
// the aggregate whose v1 piece CID it names, one deal per contract with
// provider "f0<provider_id>".
func (d *Oracle) Reports() []events.DealReport {
	var out []events.DealReport
	for _, r := range d.ActiveReplicas {
		if len(r.Contracts) == 0 {
			continue
		}
		rep := events.DealReport{
			Header:    events.Header{Type: events.TypeDealReport, Version: events.Version},
			Aggregate: r.PieceCID, Status: events.StatusActive,
		}
		for _, c := range r.Contracts {
			rep.Deals = append(rep.Deals, events.Deal{
				Provider: fmt.Sprintf("f0%d", c.ProviderID), DealID: c.LegacyMarketID,
				ExpirationEpoch: c.LegacyMarketEndEpoch,
			})
		}
		out = append(out, rep)
	}
	return out
}

// OraclePoller fetches an engine's oracle document and returns the deals
// it has not returned before. It is safe for concurrent use.
type OraclePoller struct {
	// URL of the document, plain or zstd (e.g. …/oracle.zst).
	URL string
	// Interval between polls in Run; zero means ten minutes.
	Interval time.Duration
	// Client fetches the document; nil means http.DefaultClient.
	Client *http.Client
	// Want, when set, keeps only replicas whose v1 piece CID it accepts.
	// The network's document lists every Spade deal; ferry passes its own
	// aggregates so the poller neither returns nor remembers the rest.
	Want func(pieceV1 string) bool
	// Logger hears about failed polls in Run; nil means silence.
	Logger *slog.Logger

	mu   sync.Mutex
	seen map[dealKey]bool
}

type dealKey struct {
	piece    string
	provider string
	id       uint64
}

// Poll fetches the document once and returns an active report per piece
// that has deals Poll has not returned before, listing only those deals.
// ferry's fold dedupes deals itself; remembering here keeps a document that
// rarely changes from being republished every interval.
func (p *OraclePoller) Poll(ctx context.Context) ([]events.DealReport, error) {
	doc, err := p.fetch(ctx)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen == nil {
		p.seen = make(map[dealKey]bool)
	}
	var out []events.DealReport
	for _, rep := range doc.Reports() {
		if p.Want != nil && !p.Want(rep.Aggregate) {
			continue
		}
		if rep.Deals = p.unseen(rep); len(rep.Deals) > 0 {
			out = append(out, rep)
		}
	}
	return out, nil
}

// unseen returns rep's deals not returned before and marks them returned.
func (p *OraclePoller) unseen(rep events.DealReport) []events.Deal {
	var fresh []events.Deal
	for _, d := range rep.Deals {
		k := dealKey{rep.Aggregate, d.Provider, d.DealID}
		if !p.seen[k] {
			p.seen[k] = true
			fresh = append(fresh, d)
		}
	}
	return fresh
}

// Forget makes Poll return these reports' deals again, for a caller that
// could not pass them on.
func (p *OraclePoller) Forget(reports []events.DealReport) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, rep := range reports {
		for _, d := range rep.Deals {
			delete(p.seen, dealKey{rep.Aggregate, d.Provider, d.DealID})
		}
	}
}

func (p *OraclePoller) fetch(ctx context.Context) (*Oracle, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("oracle: %w", err)
	}
	client := p.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("oracle: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		answer, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
		return nil, fmt.Errorf("oracle: %s answered %s: %s", p.URL, resp.Status, reasonOf(answer))
	}
	return ParseOracle(resp.Body)
}

// Run polls now and then every Interval until ctx ends, handing each
// non-empty batch to handle. A failed poll is logged and tried again next
// interval; a batch handle fails on is forgotten, so it comes again. Run
// returns ctx's error.
func (p *OraclePoller) Run(ctx context.Context, handle func(context.Context, []events.DealReport) error) error {
	interval := p.Interval
	if interval <= 0 {
		interval = 10 * time.Minute
	}
	log := orDiscard(p.Logger)
	for {
		reports, err := p.Poll(ctx)
		if err != nil {
			log.Warn("oracle poll failed", "url", p.URL, "err", err)
		} else if len(reports) > 0 {
			if err := handle(ctx, reports); err != nil {
				p.Forget(reports)
				log.Warn("oracle reports not handled", "reports", len(reports), "err", err)
			}
		}
		if err := sleep(ctx, interval); err != nil {
			return err
		}
	}
}
