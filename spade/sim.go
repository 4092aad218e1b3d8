package spade

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/bits"
	"math/rand/v2"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/klauspost/compress/zstd"
)

// MaxOfferSize bounds the body of an offer the simulator reads.
const MaxOfferSize = 64 << 20

// Simulator defaults, used where SimConfig leaves a field zero.
const (
	DefaultMaxAssemble    = 1 << 30
	DefaultConcurrency    = 2
	DefaultReportAttempts = 10
)

// DefaultProviders are the made-up storage providers of a simulator.
var DefaultProviders = []string{"f01000", "f01001"}

// SimConfig configures a Simulator. Each field maps to one flag of
// "ferry spade-sim"; the zero value of every field is a working default.
type SimConfig struct {
	// ReportToken is sent as the bearer token with every report POSTed to
	// an offer's reportUrl (ferry's POST /v1/deals/report).
	ReportToken string
	// AcceptToken is the bearer token offers must carry; empty accepts
	// offers without one.
	AcceptToken string
	// Delay is how long the simulator waits, after checking an offer,
	// before it reports the outcome: a stand-in for deal making.
	Delay time.Duration
	// FailureRate is the share (0 to 1) of offers that pass every check and
	// are still reported failed with "simulated failure". Whether an offer
	// fails depends only on Seed, its piece and how often that piece was
	// tried, so a trial repeats exactly.
	FailureRate float64
	// Seed seeds the failure draws.
	Seed uint64
	// Providers are the storage providers deals are made with, as f0
	// addresses; default DefaultProviders.
	Providers []string
	// Replicas is the number of deals (each with a different provider) made
	// per aggregate; default 1, at most len(Providers).
	Replicas int
	// MinDealSize and MaxDealSize bound the padded deal sizes accepted;
	// zero means no bound.
	MinDealSize uint64
	MaxDealSize uint64
	// MaxAssemble is the largest deal whose bytes are assembled to
	// recompute the aggregate's commitment; larger deals are checked with
	// go-data-segment's commitment of the offered pieces. Default 1 GiB.
	MaxAssemble uint64
	// Concurrency is the number of offers checked at once; default 2.
	Concurrency int
	// QueueLength is the number of offers waiting to be checked; an offer
	// beyond it is answered 503, so the sender retries. Default 64.
	QueueLength int
	// ReportAttempts bounds the tries of each report; default 10.
	ReportAttempts int
	// ReportBackoff is the wait between report tries; zero means
	// DefaultBackoff.
	ReportBackoff Backoff
	// TempDir holds downloaded CARs while an offer is checked; empty means
	// the system's temporary directory.
	TempDir string
	// Client downloads CARs and posts reports; nil means a client without
	// an overall timeout (CARs can be large). Each report try is bounded
	// to 30 seconds regardless.
	Client *http.Client
	// Logger receives the simulator's log; nil means silence.
	Logger *slog.Logger
}

// Offer statuses in the simulator, as GET /offers shows them.
const (
	SimQueued   = "queued"
	SimChecking = "checking"
)

// OfferOutcome is what the simulator knows of an offered piece, as
// GET /offers lists it.
type OfferOutcome struct {
	Aggregate uint64    `json:"aggregate"`
	Piece     string    `json:"piece"`
	DealSize  uint64    `json:"dealSize"`
	Pieces    int       `json:"pieces"`
	Received  time.Time `json:"received"`
	// Offers counts how often the piece was offered, repeats included.
	Offers int `json:"offers"`
	// Status is queued, checking, published or failed.
	Status string        `json:"status"`
	Reason string        `json:"reason,omitempty"`
	Deals  []events.Deal `json:"deals,omitempty"`
	// Reported says the last report was accepted by ferry; ReportError
	// says why it was not.
	Reported    bool   `json:"reported"`
	ReportError string `json:"reportError,omitempty"`
}

// Simulator is a deal engine for trying ferry out; see the package doc.
// Create it with NewSimulator, serve its Handler, and Close it.
type Simulator struct {
	cfg    SimConfig
	log    *slog.Logger
	client *http.Client
	jobs   chan *simOffer
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex // guards everything below and every simOffer
	closed   bool
	byPiece  map[string]*simOffer
	order    []*simOffer
	lastDeal uint64
}

// simOffer is one offered piece; its fields are guarded by Simulator.mu.
type simOffer struct {
	OfferOutcome
	offer *Offer
	// runs counts the checks started, which varies the failure draw of a
	// piece offered again after it failed.
	runs int
}

var providerRE = regexp.MustCompile(`^[ft]0[0-9]+$`)

// NewSimulator checks cfg, fills in its defaults and starts the workers.
func NewSimulator(cfg SimConfig) (*Simulator, error) {
	if err := withDefaults(&cfg); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Simulator{
		cfg: cfg, log: orDiscard(cfg.Logger), client: cfg.Client,
		jobs: make(chan *simOffer, cfg.QueueLength), ctx: ctx, cancel: cancel,
		byPiece: make(map[string]*simOffer),
	}
	if s.client == nil {
		s.client = &http.Client{}
	}
	for range cfg.Concurrency {
		s.wg.Go(s.work)
	}
	return s, nil
}

func withDefaults(cfg *SimConfig) error {
	if cfg.FailureRate < 0 || cfg.FailureRate > 1 {
		return fmt.Errorf("spade-sim: failure rate %v is not between 0 and 1", cfg.FailureRate)
	}
	if cfg.MaxDealSize != 0 && cfg.MinDealSize > cfg.MaxDealSize {
		return fmt.Errorf("spade-sim: min deal size %d above max %d", cfg.MinDealSize, cfg.MaxDealSize)
	}
	if len(cfg.Providers) == 0 {
		cfg.Providers = DefaultProviders
	}
	for _, p := range cfg.Providers {
		if !providerRE.MatchString(p) {
			return fmt.Errorf("spade-sim: provider %q is not an f0 address", p)
		}
	}
	cfg.Replicas = min(max(cfg.Replicas, 1), len(cfg.Providers))
	cfg.MaxAssemble = cmpOr(cfg.MaxAssemble, DefaultMaxAssemble)
	cfg.Concurrency = cmpOr(cfg.Concurrency, DefaultConcurrency)
	cfg.QueueLength = cmpOr(cfg.QueueLength, 64)
	cfg.ReportAttempts = cmpOr(cfg.ReportAttempts, DefaultReportAttempts)
	return nil
}

// cmpOr is v, or def when v is not positive.
func cmpOr[T ~int | ~int64 | ~uint64](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Close stops accepting offers, abandons the checks and reports under way
// and waits for every goroutine of the simulator to end.
func (s *Simulator) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return nil
}

// Handler serves the engine's HTTP side:
//
//	POST /offers      take an Offer: 202 {"accepted":true}, or 4xx/503 {"error":…}
//	GET  /offers      the offers received and their outcome ([]OfferOutcome)
//	GET  /oracle      the oracle document of the deals made (Oracle)
//	GET  /oracle.zst  the same, zstd-compressed
func (s *Simulator) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /offers", s.postOffer)
	mux.HandleFunc("GET /offers", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Offers())
	})
	mux.HandleFunc("GET /oracle", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.Oracle())
	})
	mux.HandleFunc("GET /oracle.zst", s.getOracleZst)
	return mux
}

func (s *Simulator) postOffer(w http.ResponseWriter, r *http.Request) {
	if !bearerOK(r, s.cfg.AcceptToken) {
		writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
		return
	}
	var o Offer
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxOfferSize)).Decode(&o); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("offer: more than %d bytes", MaxOfferSize))
			return
		}
		writeError(w, http.StatusBadRequest, "offer: not JSON: "+err.Error())
		return
	}
	if err := s.acceptable(&o); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	status, answer := s.admit(&o)
	writeJSON(w, status, answer)
}

// acceptable checks the offer and the engine's deal size range.
func (s *Simulator) acceptable(o *Offer) error {
	if err := o.Validate(); err != nil {
		return err
	}
	if (s.cfg.MinDealSize != 0 && o.DealSize < s.cfg.MinDealSize) ||
		(s.cfg.MaxDealSize != 0 && o.DealSize > s.cfg.MaxDealSize) {
		return fmt.Errorf("%w: dealSize: %d outside this engine's range [%d, %d]",
			ErrBadOffer, o.DealSize, s.cfg.MinDealSize, s.cfg.MaxDealSize)
	}
	return nil
}

// admit records an offer and queues its check. A repeat offer of a piece
// that is queued or being checked changes nothing; of a published piece it
// sends the same report again (same deals, so ferry's fold dedupes it); of
// a failed piece it starts a fresh check, since ferry may offer the same
// layout again after a failure that was not the data's fault.
func (s *Simulator) admit(o *Offer) (int, any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return http.StatusServiceUnavailable, map[string]string{"error": ErrClosed.Error()}
	}
	key := canonicalPiece(o)
	so := s.byPiece[key]
	if so != nil {
		so.Offers++
	}
	switch {
	case so != nil && so.Status == events.StatusPublished:
		s.resend(so, o.ReportURL)
		return http.StatusAccepted, map[string]bool{"accepted": true, "repeat": true}
	case so != nil && so.Status != events.StatusFailed:
		return http.StatusAccepted, map[string]bool{"accepted": true, "repeat": true}
	case len(s.jobs) == cap(s.jobs):
		// Only admit sends, under mu, so the check guarantees room.
		return http.StatusServiceUnavailable, map[string]string{"error": "offer queue full, try later"}
	}
	if so == nil {
		so = &simOffer{OfferOutcome: OfferOutcome{Piece: key, Received: time.Now().UTC(), Offers: 1}}
		s.byPiece[key] = so
		s.order = append(s.order, so)
	}
	so.offer = o
	so.Aggregate, so.DealSize, so.Pieces = o.Aggregate, o.DealSize, len(o.Pieces)
	so.Status, so.Reason, so.Deals, so.Reported, so.ReportError = SimQueued, "", nil, false, ""
	s.jobs <- so
	s.log.Info("offer accepted", "aggregate", o.Aggregate, "piece", key, "pieces", len(o.Pieces), "dealSize", o.DealSize)
	return http.StatusAccepted, map[string]bool{"accepted": true}
}

// canonicalPiece is the offer's piece CID in its canonical string form, so
// the same piece written in another multibase is the same offer.
func canonicalPiece(o *Offer) string {
	c, err := o.Commitment()
	if err != nil {
		return o.Piece // Validate has ruled this out
	}
	return c.MustV2().String()
}

// resend delivers a published piece's report again; s.mu is held.
func (s *Simulator) resend(so *simOffer, reportURL string) {
	rep, run := s.reportOf(so), so.runs
	s.wg.Go(func() { s.deliver(so, run, rep, reportURL) })
}

func (s *Simulator) work() {
	for {
		select {
		case <-s.ctx.Done():
			return
		case so := <-s.jobs:
			s.process(so)
		}
	}
}

// process checks one offer, decides its outcome and starts its report.
func (s *Simulator) process(so *simOffer) {
	s.mu.Lock()
	o := so.offer
	so.Status = SimChecking
	so.runs++
	run := so.runs
	s.mu.Unlock()

	start := time.Now()
	reason := s.check(s.ctx, o)
	if s.ctx.Err() != nil {
		return // closing: the outcome would be about the shutdown, not the offer
	}
	if reason == "" && s.simulatedFailure(so.Piece, run) {
		reason = "simulated failure"
	}
	s.mu.Lock()
	s.conclude(so, reason)
	rep := s.reportOf(so)
	s.mu.Unlock()
	s.log.Info("offer checked", "aggregate", o.Aggregate, "piece", so.Piece, "status", rep.Status,
		"reason", reason, "deals", len(rep.Deals), "took", time.Since(start))
	s.wg.Go(func() { s.deliver(so, run, rep, o.ReportURL) })
}

// simulatedFailure draws from a PCG seeded with Seed, the piece and the
// run, so the same trial fails the same offers whatever order they come in.
func (s *Simulator) simulatedFailure(piece string, run int) bool {
	if s.cfg.FailureRate <= 0 {
		return false
	}
	h := fnv.New64a()
	h.Write([]byte(piece))
	r := rand.New(rand.NewPCG(s.cfg.Seed, h.Sum64()+uint64(run)))
	return r.Float64() < s.cfg.FailureRate
}

// conclude records the outcome and makes the deals; s.mu is held.
func (s *Simulator) conclude(so *simOffer, reason string) {
	if reason != "" {
		so.Status, so.Reason = events.StatusFailed, reason
		return
	}
	so.Status = events.StatusPublished
	expiration := epochAt(time.Now()) + dealEpochs
	for range s.cfg.Replicas {
		s.lastDeal++
		provider := s.cfg.Providers[(s.lastDeal-1)%uint64(len(s.cfg.Providers))]
		so.Deals = append(so.Deals, events.Deal{Provider: provider, DealID: s.lastDeal, ExpirationEpoch: expiration})
	}
}

// reportOf is the report of an offer's outcome; s.mu is held.
func (s *Simulator) reportOf(so *simOffer) events.DealReport {
	return events.DealReport{
		Header:    events.Header{Type: events.TypeDealReport, Version: events.Version},
		Aggregate: so.Piece, Status: so.Status, Deals: slices.Clone(so.Deals), Reason: so.Reason,
	}
}

// deliver waits Delay, then POSTs the report until ferry accepts it,
// refuses it (4xx: logged, not retried) or the attempts run out. It records
// the delivery only if no later check of the piece (run) has started.
func (s *Simulator) deliver(so *simOffer, run int, rep events.DealReport, url string) {
	if sleep(s.ctx, s.cfg.Delay) != nil {
		return
	}
	body, err := json.Marshal(rep)
	if err != nil {
		s.log.Error("report not encoded", "piece", rep.Aggregate, "err", err)
		return
	}
	onRetry := func(n int, err error, wait time.Duration) {
		s.log.Warn("report failed, will retry", "piece", rep.Aggregate, "attempt", n, "err", err, "wait", wait)
	}
	err = retry(s.ctx, s.cfg.ReportBackoff, s.cfg.ReportAttempts, onRetry, func() error {
		ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
		defer cancel()
		return postJSON(ctx, s.client, url, s.cfg.ReportToken, body)
	})
	s.mu.Lock()
	if so.runs == run {
		so.Reported, so.ReportError = err == nil, errText(err)
	}
	s.mu.Unlock()
	switch {
	case err == nil:
		s.log.Info("report delivered", "piece", rep.Aggregate, "status", rep.Status, "url", url)
	case s.ctx.Err() != nil:
		s.log.Info("report abandoned: the simulator is closing", "piece", rep.Aggregate, "url", url)
	case errors.Is(err, ErrRefused):
		s.log.Error("report refused by ferry, not retried", "piece", rep.Aggregate, "url", url, "err", err)
	default:
		s.log.Error("report undelivered", "piece", rep.Aggregate, "url", url, "err", err)
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Offers lists the offered pieces in the order they first came.
func (s *Simulator) Offers() []OfferOutcome {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]OfferOutcome, len(s.order))
	for i, so := range s.order {
		out[i] = so.OfferOutcome
		out[i].Deals = slices.Clone(so.Deals)
	}
	return out
}

// Oracle is the replica document of the deals made so far: every
// published piece, by its v1 CID, with one contract per deal.
func (s *Simulator) Oracle() *Oracle {
	s.mu.Lock()
	defer s.mu.Unlock()
	doc := &Oracle{StateEpoch: epochAt(time.Now()), ActiveReplicas: []Replica{}}
	for _, so := range s.order {
		if so.Status != events.StatusPublished {
			continue
		}
		doc.ActiveReplicas = append(doc.ActiveReplicas, replicaOf(so))
	}
	return doc
}

func replicaOf(so *simOffer) Replica {
	r := Replica{PieceCID: so.offer.PieceV1, PieceLog2Size: bits.Len64(so.DealSize) - 1}
	if c, err := so.offer.Commitment(); err == nil {
		r.PieceCID = c.V1().String()
	}
	for _, d := range so.Deals {
		id, _ := strconv.ParseUint(d.Provider[2:], 10, 64) // checked by withDefaults
		r.Contracts = append(r.Contracts, Contract{
			ProviderID: id, LegacyMarketID: d.DealID, LegacyMarketEndEpoch: d.ExpirationEpoch,
		})
	}
	return r
}

func (s *Simulator) getOracleZst(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/zstd")
	zw, err := zstd.NewWriter(w, zstd.WithEncoderConcurrency(1))
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if err := json.NewEncoder(zw).Encode(s.Oracle()); err != nil {
		zw.Close()
		return
	}
	zw.Close()
}

// Filecoin mainnet's genesis and epoch length, so made-up deals carry
// plausible epochs.
var filecoinGenesis = time.Date(2020, 8, 24, 22, 0, 0, 0, time.UTC)

const (
	epochLength = 30 * time.Second
	// dealEpochs is a deal's length: 540 days, Spade's usual.
	dealEpochs = 540 * 24 * 60 * 60 / 30
)

func epochAt(t time.Time) int64 { return int64(t.Sub(filecoinGenesis) / epochLength) }
