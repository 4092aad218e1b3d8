package jetlog

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Entry is one message of a log: its stream sequence and body.
type Entry struct {
	Seq  uint64
	Data []byte
	// Time is when the stream stored the message.
	Time time.Time
	Msg  jetstream.Msg
}

// ErrBehind means a read of a log ended before the last message the
// stream's leader holds: the replica its consumer reads did not deliver
// the rest within the stall bound. BehindError says how far it got.
var ErrBehind = errors.New("the replica the consumer reads is behind the stream")

// BehindError is a read that stopped short of the log's end: it read
// Messages messages up to sequence Read, and the stream's leader holds
// messages up to Last.
type BehindError struct {
	Stream, Subject string
	Messages        int
	Read, Last      uint64
	// Stall is how long the consumer delivered nothing.
	Stall time.Duration
}

func (e *BehindError) Error() string {
	what := e.Stream
	if e.Subject != "" {
		what += " " + e.Subject
	}
	return fmt.Sprintf("read %d messages of %s up to sequence %d of %d: %v (nothing delivered for %s)",
		e.Messages, what, e.Read, e.Last, ErrBehind, e.Stall)
}

// Unwrap makes errors.Is(err, ErrBehind) hold.
func (e *BehindError) Unwrap() error { return ErrBehind }

// readStall bounds how long a read that has not reached the leader's last
// sequence waits for its consumer's next message. A replica catching up
// after a restart delivers within it; one that stays behind (its copy
// stopped applying) is reported instead of read as the whole log.
var readStall = 30 * time.Second

// ReadStall is the bound of a read to the end on a consumer that delivers
// nothing while the log's leader holds more (see ErrBehind).
func ReadStall() time.Duration { return readStall }

// replicaEnd, set by a test, makes the consumer behave as one on a replica
// whose copy of the stream ends at the sequence it returns (0: the whole
// stream): later messages are not delivered, and the one there says
// nothing is pending.
var replicaEnd func(stream string) uint64

// Tail reads stream from sequence from on and calls fn for each message in
// order. With follow it keeps waiting for new messages until ctx ends or fn
// fails; without it returns once the message that was last when Tail started
// has been read. An ephemeral consumer without acknowledgements is used
// (see reader), in memory on one server; it goes 5 minutes after the tail
// ends.
func Tail(ctx context.Context, js jetstream.JetStream, stream string, from uint64, follow bool, fn func(Entry) error) error {
	return TailSubject(ctx, js, stream, "", from, follow, fn)
}

// TailSubject is Tail over the messages of one subject of the stream (all
// of them when subject is empty); the server skips the others.
//
// Without follow, the end is the last message of subject as the stream's
// leader holds it when TailSubject starts (End), not where the consumer's
// replica says nothing is pending: a consumer may sit on a replica that is
// behind (a restarted server catching up, or one whose copy stopped
// applying). TailSubject returns nil only once it has delivered up to that
// end, or the leader holds no message between what it delivered and the
// end (they were deleted); a consumer that delivers nothing for
// ReadStall meanwhile ends the read with a *BehindError.
func TailSubject(ctx context.Context, js jetstream.JetStream, stream, subject string, from uint64, follow bool, fn func(Entry) error) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	var end *End
	if !follow {
		if end, err = newEnd(ctx, js, st, stream, subject); err != nil {
			return err
		}
		if end.Last == 0 || end.Last < from {
			return nil
		}
	}
	var filter []string
	if subject != "" {
		filter = []string{subject}
	}
	replica := replicaEndOf(stream)
	r := newReader(js, st, stream, filter)
	defer r.stop()
	if !follow {
		cons, err := r.consumer(ctx, from)
		if err != nil {
			return err
		}
		ci, err := cons.Info(ctx)
		if err != nil {
			return fmt.Errorf("consumer on %s: %w", stream, err)
		}
		if ci.NumPending == 0 || replica != 0 && from > replica {
			// Nothing pending on the consumer's replica: the end if the
			// leader has no message from here to it either.
			if done, err := end.Reached(ctx, from); err != nil || done {
				return err
			}
		}
	}
	var wait time.Duration
	if !follow {
		wait = readStall
	}
	var (
		n    int    // messages delivered
		read uint64 // the sequence of the last one
	)
	for {
		msg, err := r.next(ctx, wait, max(read+1, from))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !follow && errors.Is(err, nats.ErrTimeout) {
				return end.Stalled(ctx, n, max(read+1, from))
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return ctx.Err()
			}
			return fmt.Errorf("read %s: %w", stream, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("read %s: %w", stream, err)
		}
		seq, pending := meta.Sequence.Stream, meta.NumPending
		if replica != 0 {
			if seq > replica {
				continue
			}
			if seq == replica {
				pending = 0
			}
		}
		n, read = n+1, seq
		if err := fn(Entry{Seq: seq, Data: msg.Data(), Time: meta.Timestamp, Msg: msg}); err != nil {
			return err
		}
		if follow {
			continue
		}
		if done, err := end.After(ctx, seq, pending); err != nil || done {
			return err
		}
	}
}

func replicaEndOf(stream string) uint64 {
	if replicaEnd == nil {
		return 0
	}
	return replicaEnd(stream)
}

// End is where a read of a log to its end stops: the last message of
// Subject (of the whole stream when empty) as the stream's leader held it
// when NewEnd asked. Only the leader is asked: a consumer's "nothing
// pending" speaks for the replica it sits on, which may be behind.
type End struct {
	js              jetstream.JetStream
	Stream, Subject string
	// Last is the sequence of that message (0: there is none).
	Last uint64
}

// NewEnd asks stream's leader for the end of a read of subject.
func NewEnd(ctx context.Context, js jetstream.JetStream, stream, subject string) (*End, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	return newEnd(ctx, js, st, stream, subject)
}

// newEnd takes the end from the stream's info (answered by the leader) or,
// for a subject, from a get of its last message sent to the leader.
func newEnd(ctx context.Context, js jetstream.JetStream, st jetstream.Stream, stream, subject string) (*End, error) {
	e := &End{js: js, Stream: stream, Subject: subject}
	if subject == "" {
		info, err := st.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", stream, err)
		}
		e.Last = info.State.LastSeq
		return e, nil
	}
	last, err := leaderGet(ctx, js, stream, msgGetRequest{LastFor: subject})
	if err != nil {
		return nil, err
	}
	e.Last = last
	return e, nil
}

// LastSeq is the sequence of the last message of subject in stream (of
// the whole stream when subject is empty) as the stream's leader holds it:
// the end a read of the log must reach, whatever replica it reads.
func LastSeq(ctx context.Context, js jetstream.JetStream, stream, subject string) (uint64, error) {
	e, err := NewEnd(ctx, js, stream, subject)
	if err != nil {
		return 0, err
	}
	return e.Last, nil
}

// After reports whether a read that has just been delivered the message at
// seq, with pending more pending on its consumer, has reached the end.
func (e *End) After(ctx context.Context, seq, pending uint64) (bool, error) {
	if seq >= e.Last {
		return true, nil
	}
	if pending > 0 {
		return false, nil
	}
	return e.Reached(ctx, seq+1)
}

// Reached reports whether a read that has delivered everything of Subject
// before sequence next has reached the end: next is past Last, or the
// leader holds no message of Subject from next up to Last (the rest were
// deleted; a replayed dead letter leaves the stream's last sequence on a
// message that is gone).
func (e *End) Reached(ctx context.Context, next uint64) (bool, error) {
	if next > e.Last {
		return true, nil
	}
	filter := e.Subject
	if filter == "" {
		filter = ">"
	}
	seq, err := leaderGet(ctx, e.js, e.Stream, msgGetRequest{Seq: next, NextFor: filter})
	if err != nil {
		return false, err
	}
	return seq == 0 || seq > e.Last, nil
}

// Stalled is the outcome of a read whose consumer delivered nothing for
// ReadStall after n messages, everything before sequence next: nil if
// that is the end after all, else a *BehindError.
func (e *End) Stalled(ctx context.Context, n int, next uint64) error {
	if done, err := e.Reached(ctx, next); err != nil || done {
		return err
	}
	return &BehindError{Stream: e.Stream, Subject: e.Subject, Messages: n, Read: next - 1, Last: e.Last, Stall: readStall}
}

// msgGetRequest is JetStream's STREAM.MSG.GET request.
type msgGetRequest struct {
	Seq     uint64 `json:"seq,omitempty"`
	LastFor string `json:"last_by_subj,omitempty"`
	NextFor string `json:"next_by_subj,omitempty"`
}

// leaderGet asks the stream's leader for the message req names and returns
// its sequence, 0 when there is none. It is sent to the STREAM.MSG.GET API,
// which only the leader answers, even when the stream allows direct gets
// (nats.go's Stream.GetMsg then asks any replica, which may be behind).
func leaderGet(ctx context.Context, js jetstream.JetStream, stream string, req msgGetRequest) (uint64, error) {
	m, err := leaderMsg(ctx, js, stream, req)
	if err != nil || m == nil {
		return 0, err
	}
	return m.Seq, nil
}

// storedMsg is the part of STREAM.MSG.GET's answer ferry reads.
type storedMsg struct {
	Seq    uint64 `json:"seq"`
	Header []byte `json:"hdrs"`
	Data   []byte `json:"data"`
}

// leaderMsg is leaderGet's answer: the message, nil when there is none.
func leaderMsg(ctx context.Context, js jetstream.JetStream, stream string, req msgGetRequest) (*storedMsg, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, js.Options().DefaultTimeout)
		defer cancel()
	}
	m, err := js.Conn().RequestWithContext(ctx, apiPrefix(js)+"STREAM.MSG.GET."+stream, body)
	if err != nil {
		return nil, fmt.Errorf("stream %s: the leader's message: %w", stream, err)
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message *storedMsg          `json:"message"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return nil, fmt.Errorf("stream %s: the leader's message: %w", stream, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return nil, nil
	case resp.Error != nil:
		return nil, fmt.Errorf("stream %s: the leader's message: %w", stream, resp.Error)
	case resp.Message == nil:
		return nil, fmt.Errorf("stream %s: the leader's message: %w", stream, jetstream.ErrInvalidJetStreamResponse)
	}
	return resp.Message, nil
}

// LastMsg is the sequence and body of the last message of subject in
// stream as the stream's leader holds it (0 and nil when there is none).
// A replica may be behind; the leader is not.
func LastMsg(ctx context.Context, js jetstream.JetStream, stream, subject string) (uint64, []byte, error) {
	m, err := leaderMsg(ctx, js, stream, msgGetRequest{LastFor: subject})
	if err != nil || m == nil {
		return 0, nil, err
	}
	return m.Seq, m.Data, nil
}

// MsgID is the message id (Nats-Msg-Id) of the message at seq in stream
// as the stream's leader holds it ("" if it has none); ok is false when
// the leader holds no message there. A writer whose acknowledgement was
// lost reads it to know whether the message stored there is its own.
func MsgID(ctx context.Context, js jetstream.JetStream, stream string, seq uint64) (id string, ok bool, err error) {
	m, err := leaderMsg(ctx, js, stream, msgGetRequest{Seq: seq})
	if err != nil || m == nil {
		return "", false, err
	}
	if len(m.Header) == 0 {
		return "", true, nil
	}
	// NATS headers are a status line and MIME headers.
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(m.Header)))
	if _, err := r.ReadLine(); err != nil {
		return "", true, fmt.Errorf("stream %s message %d: headers: %w", stream, seq, err)
	}
	h, err := r.ReadMIMEHeader()
	if err != nil && !errors.Is(err, io.EOF) {
		return "", true, fmt.Errorf("stream %s message %d: headers: %w", stream, seq, err)
	}
	return h.Get(jetstream.MsgIDHeader), true, nil
}

// apiPrefix is the subject prefix of js's JetStream API requests.
func apiPrefix(js jetstream.JetStream) string {
	o := js.Options()
	switch {
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "."
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	}
	return jetstream.DefaultAPIPrefix
}

// PullOpt is how a tail of stream pulls: by message count, which nats.go
// accounts for exactly. The aggregate log's messages are up to 64 KiB
// (grouped batches), so its pulls take 256 (16 MiB at most, within the
// subscription's 64 MB pending limit: 2,048 of them overran it, and the
// consumer stalled and was made again). Its earlier byte-bounded form
// (PullMaxMessagesWithBytesLimit(512, 8 MiB)) made nats.go drop messages as
// a slow consumer whenever the reader did work per message (ferry audit on
// a 100,000-batch log: 2 to 125 drops a read, none by count); a tail then
// re-reads from the gap, but only at the cost of a new consumer.
// The other streams hold small messages and pull 2,048 at a time.
func PullOpt(stream string) jetstream.PullMessagesOpt {
	if stream == StreamAgg {
		return jetstream.PullMaxMessages(256)
	}
	return jetstream.PullMaxMessages(2048)
}
