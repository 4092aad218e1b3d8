// Package audit proves, from the input and aggregate logs alone, that
// nothing was lost or doubled: the aggregate log is exactly the fold of the
// input log, every accepted CAR is in one state and in at most one live
// aggregate, every aggregate fits its deal and its piece CID recomputes
// from its layout (with go-data-segment), every aggregate with deals has a
// receipt for each of its CARs, and the read models agree with the logs.
//
// An audit vouches only for what it read: every message of each log, from
// the first up to the last the stream's leader holds when the audit reads
// it (for the input log: up to the last input the aggregate log has
// folded), must have been delivered, or be a deleted message. A read that
// missed stored messages (nats.go dropped them from a slow consumer, or
// the consumer's replica is behind the stream) gives no verdict at all: Run
// returns a *PartialReadError, never violations drawn from a part of the
// logs, nor an ok. A message delivered twice or out of order is a
// violation.
package audit

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/ferry-dev/ferry/events"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/piece"
	"github.com/ferry-dev/ferry/wire"
	"github.com/filecoin-project/go-data-segment/datasegment"
	"github.com/filecoin-project/go-state-types/abi"
	"github.com/ipfs/go-cid"
	"github.com/nats-io/nats.go/jetstream"
)

// Violation is one broken invariant and what it concerns.
type Violation struct {
	Concerns string `json:"concerns"`
	Problem  string `json:"problem"`
}

// Report is the outcome of an audit.
type Report struct {
	Inputs, Batches, Cars, Aggregates, Receipts, ViewsChecked int
	Violations                                                []Violation

	read *atomic.Int64 // log entries read so far, for progress lines; nil: not counted
}

// OK reports whether every invariant holds.
func (r *Report) OK() bool { return len(r.Violations) == 0 }

func (r *Report) add(concerns, format string, args ...any) {
	r.Violations = append(r.Violations, Violation{Concerns: concerns, Problem: fmt.Sprintf(format, args...)})
}

// Views reads a CAR from the read models; nil skips that check.
type Views func(ctx context.Context, car string) (*wire.CarView, error)

// Run audits the logs on js, folded under the settings the aggregate log
// records; cfg is used for a log made before settings were recorded.
// given names the settings (by their JSON names) the operator set: one
// that disagrees with the log's is aggregator.ErrSettings, since an audit
// under other settings would report violations that are not there.
func Run(ctx context.Context, js jetstream.JetStream, cfg events.Settings, given map[string]bool, views Views) (*Report, error) {
	return RunCounting(ctx, js, cfg, given, views, nil)
}

// RunCounting is Run that adds every log entry it reads to read, which
// another goroutine may load to show progress.
func RunCounting(ctx context.Context, js jetstream.JetStream, cfg events.Settings, given map[string]bool, views Views, read *atomic.Int64) (*Report, error) {
	logged, err := aggregator.LogSettings(ctx, js)
	if err != nil {
		return nil, err
	}
	if cfg, err = aggregator.Reconcile(logged, cfg, given); err != nil {
		return nil, err
	}
	r := &Report{read: read}
	model := aggregator.NewInvariantModel()
	var (
		sums   []stored
		lastIn uint64 // the last input the aggregate log has folded
	)
	err = readLog(ctx, js, jetlog.StreamAgg, 0, r, func(e jetlog.Entry) error {
		k := 0
		for data := range events.Batches(e.Data) {
			k++
			at := stored{seq: e.Seq, k: k, sum: sha256.Sum256(data)}
			sums = append(sums, at)
			var b events.Batch
			if err := events.DecodeBatch(data, &b); err != nil {
				r.add(at.String(), "unreadable: %v", err)
				continue
			}
			lastIn = max(lastIn, b.In)
			if err := model.Apply(b); err != nil {
				r.add(at.String(), "%v", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	r.Batches = len(sums)
	if err := refold(ctx, js, cfg, sums, lastIn, model, r); err != nil {
		return nil, err
	}
	if err := model.Check(cfg.DealSize); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			r.add("model", "%s", line)
		}
	}
	aggs := model.Aggregates()
	r.Aggregates = len(aggs)
	for _, a := range aggs {
		checkAggregate(a, cfg.DealSize, r)
	}
	if err := checkReceipts(ctx, js, aggs, r); err != nil {
		return nil, err
	}
	if views != nil {
		if err := checkViews(ctx, model, aggs, views, r); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// stored is one batch of the aggregate log: the k-th (from 1) of message
// seq, and the SHA-256 of its bytes.
type stored struct {
	seq uint64
	k   int
	sum [32]byte
}

func (s stored) String() string {
	if s.k == 1 {
		return fmt.Sprintf("aggregate log %d", s.seq)
	}
	return fmt.Sprintf("aggregate log %d, batch %d", s.seq, s.k)
}

// refold folds the input log, up to the last input the aggregate log has
// folded (lastIn), into a fresh state and requires the stored aggregate
// log, batch for batch and byte for byte (how batches were grouped into
// messages is the runner's timing, not a decision); it also requires every
// car.replicated the fold accepted to have a state in the model. Inputs
// after lastIn are not folded yet: on a live system they arrive while the
// audit reads.
func refold(ctx context.Context, js jetstream.JetStream, cfg events.Settings, sums []stored, lastIn uint64, model *aggregator.InvariantModel, r *Report) error {
	st := aggregator.New(cfg)
	i, mismatched := 0, false
	err := readLog(ctx, js, jetlog.StreamIn, lastIn, r, func(e jetlog.Entry) error {
		if e.Seq > lastIn {
			return errFolded
		}
		r.Inputs++
		b := st.ApplyInput(aggregator.Input{Seq: e.Seq, Data: e.Data, Stored: e.Time})
		if len(b.Decisions) == 0 {
			return nil
		}
		data, err := json.Marshal(b)
		if err != nil {
			return err
		}
		if !mismatched && (i >= len(sums) || sha256.Sum256(data) != sums[i].sum) {
			at := "aggregate log"
			if i < len(sums) {
				at = sums[i].String()
			}
			r.add(at, "differs from the fold of input %d (was the log written under another configuration?)", e.Seq)
			mismatched = true
		}
		i++
		for _, d := range b.Decisions {
			if (d.Type == events.DecCarQueued || d.Type == events.DecCarAdded) && d.Record != nil && model.CarState(d.Car) == "" {
				r.add("CAR "+d.Car, "accepted from input %d but in no state", e.Seq)
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, errFolded) {
		return err
	}
	if !mismatched && i < len(sums) {
		// The aggregator may be behind the input log, never ahead of it.
		r.add("aggregate log", "holds %d batches, the fold of the input log only %d", len(sums), i)
	}
	return nil
}

// tail reads a log for the audit; a test swaps in one that loses a
// message, as a slow consumer's drops would.
var tail = jetlog.Tail

// readLog reads stream from its first message, calls fn with each, and then
// requires that the read missed nothing up to sequence until (0: the last
// message when the read began); a message the read skipped is a violation.
func readLog(ctx context.Context, js jetstream.JetStream, stream string, until uint64, r *Report, fn func(jetlog.Entry) error) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	if until == 0 {
		info, err := st.Info(ctx)
		if err != nil {
			return fmt.Errorf("stream %s: %w", stream, err)
		}
		until = info.State.LastSeq
	}
	var c coverage
	err = tail(ctx, js, stream, 1, false, func(e jetlog.Entry) error {
		c.see(e.Seq)
		if r.read != nil {
			r.read.Add(1)
		}
		return fn(e)
	})
	// A read that stopped short of the stream's end (jetlog.ErrBehind)
	// may still hold all the audit needs; verify decides.
	if err != nil && !errors.Is(err, errFolded) && !errors.Is(err, jetlog.ErrBehind) {
		return err
	}
	if verr := c.verify(ctx, st, stream, until, r); verr != nil {
		return verr
	}
	if errors.Is(err, jetlog.ErrBehind) {
		return nil
	}
	return err
}

// ErrPartialRead means the audit did not read the whole of a log, so it
// gives no verdict; PartialReadError says how much it read.
var ErrPartialRead = errors.New("the audit read only part of a log: no verdict")

// PartialReadError is a log the audit did not read whole: it was delivered
// Messages messages up to sequence Read of Last (the stream's last
// sequence as its leader held it, or the last input the aggregate log has
// folded), and Skipped messages that are stored, the first at sequence At,
// were not delivered.
type PartialReadError struct {
	Stream              string
	Messages            int
	Read, Last, Skipped uint64
	At                  uint64
}

func (e *PartialReadError) Error() string {
	return fmt.Sprintf("log %s: the audit read %d messages up to sequence %d of %d; %d stored messages were not delivered, the first at sequence %d (a consumer on a replica behind the stream, or a slow consumer's drops): %v",
		e.Stream, e.Messages, e.Read, e.Last, e.Skipped, e.At, ErrPartialRead)
}

// Unwrap makes errors.Is(err, ErrPartialRead) hold.
func (e *PartialReadError) Unwrap() error { return ErrPartialRead }

// coverage is what a read of a log delivered: how many messages, the
// ranges of sequences it jumped over, and deliveries that went back.
type coverage struct {
	n           int
	first, last uint64
	gaps        []seqRange
	backwards   int
}

// seqRange is the sequences from through to.
type seqRange struct{ from, to uint64 }

func (c *coverage) see(seq uint64) {
	switch {
	case c.n == 0:
		c.first = seq
	case seq <= c.last:
		c.backwards++
		return
	case seq > c.last+1:
		c.gaps = append(c.gaps, seqRange{c.last + 1, seq - 1})
	}
	c.n++
	c.last = seq
}

// verify requires every sequence of stream from its first message up to
// until that the read did not deliver to be a deleted message, and returns
// a *PartialReadError otherwise.
func (c *coverage) verify(ctx context.Context, st jetstream.Stream, stream string, until uint64, r *Report) error {
	info, err := st.Info(ctx, jetstream.WithDeletedDetails(true))
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	if until > last {
		// until comes from the aggregate log, which may be forged: the
		// check costs the ranges and the deleted list, never until.
		r.add("log "+stream, "the aggregate log says it folded input %d; the input log ends at %d", until, last)
		until = last
	}
	var missing []seqRange
	if c.n == 0 {
		missing = append(missing, seqRange{first, until})
	} else {
		missing = append(append(append(missing, seqRange{first, c.first - 1}), c.gaps...), seqRange{c.last + 1, until})
	}
	deleted := map[uint64]bool{}
	for _, seq := range info.State.Deleted {
		deleted[seq] = true
	}
	skipped, at := uint64(0), uint64(0)
	for _, m := range missing {
		from, to := max(m.from, first), min(m.to, until)
		if from > to {
			continue
		}
		gone := uint64(0)
		for _, seq := range info.State.Deleted {
			if seq >= from && seq <= to {
				gone++
			}
		}
		if n := to - from + 1 - gone; n > 0 {
			if skipped == 0 {
				for at = from; deleted[at]; at++ {
				}
			}
			skipped += n
		}
	}
	if c.backwards > 0 {
		r.add("log "+stream, "%d messages were delivered twice or out of order", c.backwards)
	}
	if skipped > 0 {
		return &PartialReadError{Stream: stream, Messages: c.n, Read: c.last, Last: until, Skipped: skipped, At: at}
	}
	return nil
}

// errFolded ends the refold at the aggregate log's last input.
var errFolded = errors.New("refolded every input the aggregate log has folded")

// checkAggregate recomputes a closed aggregate's piece CID with
// go-data-segment from the layout rule: largest first, arrival order
// among equals.
func checkAggregate(a aggregator.ModelAggregate, dealSize uint64, r *Report) {
	if a.State == aggregator.Ingesting || a.State == aggregator.DealFailed || a.State == aggregator.Released {
		return // no piece yet, or none any more
	}
	concerns := "aggregate " + strconv.FormatUint(a.ID, 10)
	if a.State == aggregator.DealProcessed && a.Deals == 0 {
		r.add(concerns, "DEAL_PROCESSED without deals")
	}
	infos := make([]abi.PieceInfo, len(a.Pieces))
	for i, p := range a.Pieces {
		c, err := piece.Parse(p, 0)
		if err != nil {
			r.add(concerns, "CAR %s piece %q: %v", a.Cars[i], p, err)
			return
		}
		infos[i] = abi.PieceInfo{Size: abi.PaddedPieceSize(c.Padded), PieceCID: c.V1()}
	}
	sort.SliceStable(infos, func(i, j int) bool { return infos[i].Size > infos[j].Size })
	agg, err := datasegment.NewAggregate(abi.PaddedPieceSize(dealSize), infos)
	if err != nil {
		r.add(concerns, "does not build with go-data-segment: %v", err)
		return
	}
	got, err := agg.PieceCID()
	if err != nil || got.String() != a.PieceV1 {
		r.add(concerns, "piece CID %s in the log, %s recomputed from its layout", a.PieceV1, got)
	}
}

// checkReceipts requires a receipt for every CAR of every aggregate with
// deals, naming that aggregate.
func checkReceipts(ctx context.Context, js jetstream.JetStream, aggs []aggregator.ModelAggregate, r *Report) error {
	got := map[string][]uint64{}
	err := readLog(ctx, js, jetlog.StreamReceipts, 0, r, func(e jetlog.Entry) error {
		var rc wire.Receipt
		if err := json.Unmarshal(e.Data, &rc); err != nil {
			r.add(fmt.Sprintf("receipt %d", e.Seq), "unreadable: %v", err)
			return nil
		}
		r.Receipts++
		got[rc.Car] = append(got[rc.Car], rc.Aggregate)
		return nil
	})
	if err != nil {
		return err
	}
	for _, a := range aggs {
		if a.State != aggregator.DealProcessed {
			continue
		}
		for _, car := range a.Cars {
			if !slices.Contains(got[car], a.ID) {
				r.add("CAR "+car, "aggregate %d has deals but the CAR has no receipt for it", a.ID)
			}
		}
	}
	return nil
}

// checkViews asks the read models about every CAR the logs know.
func checkViews(ctx context.Context, model *aggregator.InvariantModel, aggs []aggregator.ModelAggregate, views Views, r *Report) error {
	state := map[uint64]string{}
	for _, a := range aggs {
		state[a.ID] = a.State
	}
	var cars []string
	model.EachCar(func(car, _ string) { cars = append(cars, car) })
	sort.Strings(cars)
	r.Cars = len(cars)
	for _, car := range cars {
		if _, err := cid.Decode(car); err != nil {
			continue // rejected names that are not CIDs have no view by CID
		}
		v, err := views(ctx, car)
		if err != nil {
			r.add("CAR "+car, "read model: %v", err)
			continue
		}
		r.ViewsChecked++
		if want := expected(model.CarState(car), state); v.State != want.state || v.Aggregate != want.agg {
			r.add("CAR "+car, "read model says %s in aggregate %d, the logs %s in aggregate %d", v.State, v.Aggregate, want.state, want.agg)
		}
	}
	return nil
}

type where struct {
	state string
	agg   uint64
}

func expected(modelState string, aggState map[uint64]string) where {
	switch {
	case modelState == "queued":
		return where{state: aggregator.Queued}
	case modelState == "rejected":
		return where{state: aggregator.Rejected}
	}
	id, _ := strconv.ParseUint(strings.TrimPrefix(modelState, "agg:"), 10, 64)
	st := aggState[id]
	if st == aggregator.Ingesting {
		st = aggregator.Aggregating
	}
	return where{state: st, agg: id}
}

// Print writes the report for people.
func (r *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "audited %d inputs, %d aggregate log batches, %d aggregates, %d receipts, %d CAR views\n",
		r.Inputs, r.Batches, r.Aggregates, r.Receipts, r.ViewsChecked)
	for _, v := range r.Violations {
		fmt.Fprintf(w, "VIOLATION %s: %s\n", v.Concerns, v.Problem)
	}
	if r.OK() {
		fmt.Fprintln(w, "ok: every invariant holds")
	}
}
