// Package receipts publishes a receipt per CAR when its aggregate gets
// deals: which aggregate, where in it, the proof of inclusion, and the
// deals (wire.Receipt), on the receipts stream a storage service
// subscribes to.
//
// # Rules
//
//   - One receipt per CAR per aggregate.deals decision: the first deals and
//     every later replica or renewal.
//   - The position is the receipts stream itself (the headers of the last
//     receipt), so a restart resumes after it; message ids make a repeat
//     within the duplicate window harmless.
//   - Only the leading ferry publishes (Active).
package receipts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/ferry-dev/ferry/events"

	"github.com/ferry-dev/ferry/frc58"
	"github.com/ferry-dev/ferry/internal/ctxerr"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/projections"
	"github.com/ferry-dev/ferry/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publisher turns aggregate.deals decisions into per-CAR receipts on the
// receipts stream. Its position is the receipts stream itself: the headers
// of the last receipt say which decision and CAR it was, so a restart
// resumes after it, and message ids make a repeat within the duplicate
// window harmless.
//
// Goroutines: Run tails the aggregate log and publishes; it waits for the
// projector to have applied a decision before reading its layout.
type Publisher struct {
	JS        jetstream.JetStream
	Store     *projections.Store
	Projector *projections.Projector
	Subjects  jetlog.Subjects
	// Active reports whether this process should publish now (it leads).
	Active func() bool
	// Window bounds receipts in flight.
	Window int
	Log    *slog.Logger
}

type position struct {
	seq uint64
	pos int
}

// Run publishes receipts until ctx ends.
func (r *Publisher) Run(ctx context.Context) error {
	if r.Log == nil {
		r.Log = slog.New(slog.DiscardHandler)
	}
	start, err := r.resume(ctx)
	if err != nil {
		return err
	}
	from := max(start.seq, 1)
	deals := []byte(`"` + events.DecAggDeals + `"`)
	each := func(e jetlog.Entry) error {
		from = e.Seq + 1
		if !bytes.Contains(e.Data, deals) {
			return nil // most messages make no deals; skip decoding them
		}
		// A batch that makes deals is a message of its own (the runner's
		// rule), so a receipt's position within its aggregate places it
		// within its message.
		err := events.EachBatch(e.Data, func(b *events.Batch) error {
			for _, d := range b.Decisions {
				if d.Type != events.DecAggDeals {
					continue
				}
				if err := r.publish(ctx, e.Seq, d); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("aggregate log %d: %w", e.Seq, err)
		}
		return nil
	}
	// Catch up over the whole log as it is (a log written before batches
	// with deals had their own subject has them among the others), then
	// follow only the batches that make deals, from right after the last
	// batch the catch-up read (each moves from).
	if err := jetlog.Tail(ctx, r.JS, jetlog.StreamAgg, from, false, each); err != nil {
		return ctxerr.NilIfDone(ctx, err)
	}
	return ctxerr.NilIfDone(ctx, jetlog.TailSubject(ctx, r.JS, jetlog.StreamAgg, r.Subjects.Deals(), from, true, each))
}

// resume reads the last receipt's headers.
func (r *Publisher) resume(ctx context.Context) (position, error) {
	st, err := r.JS.Stream(ctx, jetlog.StreamReceipts)
	if err != nil {
		return position{}, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return position{}, err
	}
	if info.State.LastSeq == 0 {
		return position{pos: -1}, nil
	}
	m, err := st.GetMsg(ctx, info.State.LastSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return position{pos: -1}, nil
	}
	if err != nil {
		return position{}, fmt.Errorf("last receipt: %w", err)
	}
	seq, _ := strconv.ParseUint(m.Header.Get(wire.HeaderAggSeq), 10, 64)
	pos, err := strconv.Atoi(m.Header.Get(wire.HeaderPosition))
	if err != nil {
		pos = -1
	}
	return position{seq: seq, pos: pos}, nil
}

// publish sends the receipts of one aggregate.deals decision, skipping
// those already on the stream.
func (r *Publisher) publish(ctx context.Context, seq uint64, d events.Decision) error {
	for r.Active != nil && !r.Active() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	done, err := r.resume(ctx)
	if err != nil {
		return err
	}
	if done.seq > seq {
		return nil
	}
	skip := -1
	if done.seq == seq {
		skip = done.pos
	}
	if err := r.Projector.WaitFor(ctx, seq); err != nil {
		return err
	}
	agg, cars, proofs, err := r.Store.Layout(d.Aggregate)
	if err != nil {
		return fmt.Errorf("receipts of aggregate %d: %w", d.Aggregate, err)
	}
	var pending []jetstream.PubAckFuture
	for i, c := range cars {
		if i <= skip {
			continue
		}
		msg, err := r.message(seq, i, agg, &c, proofs[i], d)
		if err != nil {
			return err
		}
		fut, err := r.JS.PublishMsgAsync(msg)
		if err != nil {
			return fmt.Errorf("receipt of %s: %w", c.Car, err)
		}
		if pending = append(pending, fut); len(pending) >= max(r.Window, 256) {
			if err := settle(ctx, pending); err != nil {
				return err
			}
			pending = pending[:0]
		}
	}
	if err := settle(ctx, pending); err != nil {
		return err
	}
	r.Log.Info("receipts published", "aggregate", d.Aggregate, "cars", len(cars)-skip-1, "deals", len(d.Deals))
	return nil
}

func (r *Publisher) message(seq uint64, i int, agg *wire.AggregateView, c *wire.CarView, proof *frc58.Proof, d events.Decision) (*nats.Msg, error) {
	rc := wire.Receipt{Car: c.Car, Piece: c.Piece, PieceSize: c.PieceSize, Aggregate: agg.ID, AggregatePiece: agg.Piece,
		DealSize: agg.DealSize, Position: i, Status: d.Status, Deals: d.Deals, Source: c.Source, AggregateLogSeq: seq,
		Group: c.Group, AggregateGroup: agg.Group}
	if c.Offset != nil {
		rc.Offset = *c.Offset
	}
	if proof != nil {
		iv, err := projections.Inclusion(proof)
		if err != nil {
			return nil, err
		}
		rc.Inclusion = iv
	}
	data, err := json.Marshal(rc)
	if err != nil {
		return nil, err
	}
	msg := nats.NewMsg(r.Subjects.Receipt(c.Car))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("receipt/%d/%s", seq, c.Car))
	msg.Header.Set(wire.HeaderAggSeq, strconv.FormatUint(seq, 10))
	msg.Header.Set(wire.HeaderPosition, strconv.Itoa(i))
	return msg, nil
}

func settle(ctx context.Context, futs []jetstream.PubAckFuture) error {
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("receipt not stored: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
