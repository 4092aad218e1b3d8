package jetlog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stream and bucket names. They are fixed so an operator can find them with
// a stock NATS client; the subject prefix is configurable.
const (
	// StreamIn is the input log: every fact ferry is told.
	StreamIn = "FERRY_IN"
	// StreamAgg is the aggregate log: the aggregator's decisions.
	StreamAgg = "FERRY_AGG"
	// StreamReceipts holds per-CAR deal receipts.
	StreamReceipts = "FERRY_RECEIPTS"
	// StreamWork is the piece work queue: one pending item per CAR.
	StreamWork = "FERRY_WORK"
	// StreamDLQ keeps piece work that ran out of attempts.
	StreamDLQ = "FERRY_DLQ"
	// WorkConsumer is the durable consumer every piece worker shares.
	WorkConsumer = "piece-workers"
	// StreamFetch is the fetch work queue: one pending item per pinned
	// CID.
	StreamFetch = "FERRY_FETCH"
	// StreamFetchDLQ keeps fetch work that ran out of attempts.
	StreamFetchDLQ = "FERRY_FETCH_DLQ"
	// FetchConsumer is the durable consumer every fetch worker shares.
	FetchConsumer = "fetch-workers"
	// StreamPack is the pack work queue: one pending item per CAR job of
	// a `ferry pack --nats`.
	StreamPack = "FERRY_PACK"
	// StreamPackDLQ keeps pack work that ran out of attempts.
	StreamPackDLQ = "FERRY_PACK_DLQ"
	// StreamPackDone holds the pack workers' results, the last one per
	// job.
	StreamPackDone = "FERRY_PACK_DONE"
	// PackConsumer is the durable consumer every pack worker shares.
	PackConsumer = "pack-workers"
	// BucketLeader holds the aggregator's leadership lease.
	BucketLeader = "FERRY_LEADER"
	// BucketSnap is the object store of the aggregator's state snapshots
	// and the runs of its dedupe index (package aggregator/snapshots).
	BucketSnap = "FERRY_SNAP"
	// BucketAttempts holds the last failed attempt of each waiting work
	// item of every work queue (package workqueue), keyed
	// <queue>.<item key>, so that a status read anywhere can say why an
	// item waits.
	BucketAttempts = "FERRY_WORK_ATTEMPTS"
	// DefaultPrefix is the default subject prefix.
	DefaultPrefix = "ferry."
)

// Subjects names ferry's subjects under one prefix ("ferry." by default).
type Subjects struct{ Prefix string }

// DefaultSubjects uses DefaultPrefix.
var DefaultSubjects = Subjects{Prefix: DefaultPrefix}

// Input is the subject of an input event of type typ: <prefix>in.<type>.
func (s Subjects) Input(typ string) string { return s.Prefix + "in." + typ }

// Inputs matches every input subject.
func (s Subjects) Inputs() string { return s.Prefix + "in.>" }

// Pins matches the pin events of the input log (pin.requested, …): what
// the pins read model reads.
func (s Subjects) Pins() string { return s.Prefix + "in.pin.>" }

// Decisions is the subject of the aggregate log's batches, except those
// that make deals.
func (s Subjects) Decisions() string { return s.Prefix + "agg.decisions" }

// Deals is the subject of the aggregate log's batches that make deals
// (an aggregate.deals decision). They have a subject of their own so that
// receipts, which need only them, are not sent every batch.
func (s Subjects) Deals() string { return s.Prefix + "agg.deals" }

// Receipt is the subject of the receipts of one CAR.
func (s Subjects) Receipt(car string) string { return s.Prefix + "receipts." + car }

// Receipts matches every receipt subject.
func (s Subjects) Receipts() string { return s.Prefix + "receipts.>" }

// Work is the subject of the piece work item of one CAR.
func (s Subjects) Work(car string) string { return s.Prefix + "work.piece." + car }

// Works matches every piece work item.
func (s Subjects) Works() string { return s.Prefix + "work.piece.>" }

// DeadLetter is the subject of a CAR's piece work that ran out of attempts.
func (s Subjects) DeadLetter(car string) string { return s.Prefix + "dlq.piece." + car }

// DeadLetters matches every dead letter.
func (s Subjects) DeadLetters() string { return s.Prefix + "dlq.piece.>" }

// FetchWork is the subject of the fetch work item of one CID.
func (s Subjects) FetchWork(cid string) string { return s.Prefix + "work.fetch." + cid }

// FetchWorks matches every fetch work item.
func (s Subjects) FetchWorks() string { return s.Prefix + "work.fetch.>" }

// FetchDeadLetter is the subject of a CID's fetch work that ran out of
// attempts.
func (s Subjects) FetchDeadLetter(cid string) string { return s.Prefix + "dlq.fetch." + cid }

// FetchDeadLetters matches every fetch dead letter.
func (s Subjects) FetchDeadLetters() string { return s.Prefix + "dlq.fetch.>" }

// PackWork is the subject of the pack work item of one job, keyed
// <plan id>.<index>.
func (s Subjects) PackWork(key string) string { return s.Prefix + "work.pack." + key }

// PackWorks matches every pack work item.
func (s Subjects) PackWorks() string { return s.Prefix + "work.pack.>" }

// PackDeadLetter is the subject of a job's pack work that ran out of
// attempts.
func (s Subjects) PackDeadLetter(key string) string { return s.Prefix + "dlq.pack." + key }

// PackDeadLetters matches every pack dead letter.
func (s Subjects) PackDeadLetters() string { return s.Prefix + "dlq.pack.>" }

// PackDone is the subject of the result of one pack job.
func (s Subjects) PackDone(key string) string { return s.Prefix + "pack.done." + key }

// PackDones matches every pack result.
func (s Subjects) PackDones() string { return s.Prefix + "pack.done.>" }

// FetchCancel is the core NATS subject (no stream) on which the fetch of
// one CID is cancelled: every fetch worker listens.
func (s Subjects) FetchCancel(cid string) string { return s.Prefix + "fetch.cancel." + cid }

// FetchCancels matches every fetch cancellation.
func (s Subjects) FetchCancels() string { return s.Prefix + "fetch.cancel.*" }

// StreamOptions shape the streams ferry creates.
type StreamOptions struct {
	Subjects Subjects
	// Replicas for every stream (1 on a single server).
	Replicas int
	// Duplicates is the Nats-Msg-Id window of the input stream and the
	// receipts (0: DefaultDuplicates).
	Duplicates time.Duration
}

// DefaultDuplicates is the input log's default message id window. It
// catches a producer's retry of a publish whose acknowledgement it did not
// get: nats.go gives up on an acknowledgement after 5 s, so 10 s covers
// that timeout and the retry. The fold dedupes CARs in its state for
// good, so a later copy is only an extra message answered input.ignored.
// NATS keeps every id of the window in memory (~200 bytes each) as
// pointers the garbage collector marks on every cycle: the window times
// the ingest rate is resident memory (10 s at 30,000 events/s ~60 MB,
// NATS's default 2 minutes ~720 MB) and collector work. At 1,000,000
// events a 30-s window cost 17% more CPU per event than 10 s.
const DefaultDuplicates = 10 * time.Second

// EnsureStreams creates or updates ferry's streams and buckets. It is
// idempotent and safe to run from every process at start.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, o StreamOptions) error {
	if o.Replicas < 1 {
		o.Replicas = 1
	}
	if o.Duplicates == 0 {
		o.Duplicates = DefaultDuplicates
	}
	s := o.Subjects
	// The receipts are derived: the receipter resumes from the last
	// receipt stored and publishes the rest again, each under the same
	// position. So a tail lost with a killed server is made again, and the
	// receipts may acknowledge before they write. The aggregate log may
	// not: its batches come back the same after a lost tail, but grouped
	// into messages differently, so read models that had applied the lost
	// messages would no longer match it (the projector then rebuilds, see
	// Projector.Run); write-through costs one write per message, and a
	// message holds up to 256 batches. (Async persistence is for
	// unreplicated streams; replicated ones already flush behind Raft.)
	receipts := jetstream.DefaultPersistMode
	if o.Replicas == 1 {
		receipts = jetstream.AsyncPersistMode
	}
	cfgs := []jetstream.StreamConfig{
		{Name: StreamIn, Subjects: []string{s.Inputs()}, Storage: jetstream.FileStorage, Replicas: o.Replicas,
			Duplicates: o.Duplicates, MaxMsgSize: events.MaxInputBytes, Description: "ferry input log: facts, appended once"},
		{Name: StreamAgg, Subjects: []string{s.Decisions(), s.Deals()}, Storage: jetstream.FileStorage, Replicas: o.Replicas,
			Duplicates: aggDuplicates, Description: "ferry aggregate log: the aggregator's decisions"},
		{Name: StreamReceipts, Subjects: []string{s.Receipts()}, Storage: jetstream.FileStorage, Replicas: o.Replicas,
			PersistMode: receipts, Duplicates: o.Duplicates, Description: "ferry per-CAR deal receipts"},
		// One subject per CAR holding at most one message, new ones
		// discarded: a CAR is never waiting twice, however often its work
		// is published.
		{Name: StreamWork, Subjects: []string{s.Works()}, Storage: jetstream.FileStorage, Replicas: o.Replicas,
			Retention: jetstream.WorkQueuePolicy, MaxMsgsPerSubject: 1, Discard: jetstream.DiscardNew, DiscardNewPerSubject: true,
			Duplicates: o.Duplicates, Description: "ferry piece work: CARs waiting for their piece CID"},
		{Name: StreamDLQ, Subjects: []string{s.DeadLetters()}, Storage: jetstream.FileStorage, Replicas: o.Replicas,
			Description: "ferry piece work that ran out of attempts, for ferry dlq list|replay"},
		// The fetch work queue, shaped as the piece work's: a CID waits
		// once however often it is pinned.
		{Name: StreamFetch, Subjects: []string{s.FetchWorks()}, Storage: jetstream.FileStorage, Replicas: o.Replicas,
			Retention: jetstream.WorkQueuePolicy, MaxMsgsPerSubject: 1, Discard: jetstream.DiscardNew, DiscardNewPerSubject: true,
			Duplicates: o.Duplicates, Description: "ferry fetch work: pinned CIDs waiting to be fetched"},
		{Name: StreamFetchDLQ, Subjects: []string{s.FetchDeadLetters()}, Storage: jetstream.FileStorage, Replicas: o.Replicas,
			Description: "ferry fetch work that ran out of attempts, for ferry dlq list|replay"},
	}
	for _, cfg := range append(cfgs, packStreams(o)...) {
		// A stream's persist mode cannot change: keep an existing one's.
		if st, err := js.Stream(ctx, cfg.Name); err == nil {
			cfg.PersistMode = st.CachedInfo().Config.PersistMode
		}
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("stream %s: %w", cfg.Name, err)
		}
	}
	_, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: BucketLeader, TTL: LeaseTTL, Replicas: o.Replicas, Storage: jetstream.FileStorage,
		Description: "ferry aggregator leadership lease",
	})
	if err != nil {
		return fmt.Errorf("bucket %s: %w", BucketLeader, err)
	}
	if _, err := js.CreateOrUpdateKeyValue(ctx, attemptsConfig(o.Replicas)); err != nil {
		return fmt.Errorf("bucket %s: %w", BucketAttempts, err)
	}
	_, err = js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket: BucketSnap, Replicas: o.Replicas, Storage: jetstream.FileStorage,
		Description: "ferry aggregator state snapshots and dedupe index runs",
	})
	if err != nil {
		return fmt.Errorf("bucket %s: %w", BucketSnap, err)
	}
	return nil
}

// attemptsTTL bounds how long an attempt record outlives its last write:
// a live item's record is rewritten at each failure (backoffs are minutes),
// and the record of a dead item (or a delete marker) need not stay for
// good, the dead-letter stream keeps the item.
const attemptsTTL = 7 * 24 * time.Hour

func attemptsConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket: BucketAttempts, TTL: attemptsTTL, Replicas: replicas, Storage: jetstream.FileStorage,
		Description: "ferry work queues: the last failed attempt of each waiting item",
	}
}

// packStreams are the pack workers' streams: the work queue and its dead
// letters, shaped as the piece work's, and the results, the last one per
// job (a job built again replaces its result).
func packStreams(o StreamOptions) []jetstream.StreamConfig {
	s := o.Subjects
	return []jetstream.StreamConfig{
		{Name: StreamPack, Subjects: []string{s.PackWorks()}, Storage: jetstream.FileStorage, Replicas: o.Replicas,
			Retention: jetstream.WorkQueuePolicy, MaxMsgsPerSubject: 1, Discard: jetstream.DiscardNew, DiscardNewPerSubject: true,
			Duplicates: o.Duplicates, Description: "ferry pack work: CAR jobs of ferry pack --nats waiting for a pack worker"},
		{Name: StreamPackDLQ, Subjects: []string{s.PackDeadLetters()}, Storage: jetstream.FileStorage, Replicas: o.Replicas,
			Description: "ferry pack work that ran out of attempts, for ferry dlq list|replay"},
		{Name: StreamPackDone, Subjects: []string{s.PackDones()}, Storage: jetstream.FileStorage, Replicas: o.Replicas,
			MaxMsgsPerSubject: 1, Duplicates: o.Duplicates, Description: "ferry pack results: the CAR each pack job built"},
	}
}

// EnsurePackStreams creates the pack streams that do not exist yet, for
// the processes of a pack (ferry pack --nats, ferry pack-worker), which may
// run against a NATS server ferry serve has not set up: with the replicas
// of FERRY_IN when it exists (ferry serve's --replicas), else 1. Streams
// that exist are left as they are: EnsureStreams keeps them up to date.
// The bucket of attempt records (BucketAttempts) is created the same way.
func EnsurePackStreams(ctx context.Context, js jetstream.JetStream, sub Subjects) error {
	o := StreamOptions{Subjects: sub, Replicas: 1, Duplicates: DefaultDuplicates}
	if st, err := js.Stream(ctx, StreamIn); err == nil {
		o.Replicas = max(1, st.CachedInfo().Config.Replicas)
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("stream %s: %w", StreamIn, err)
	}
	for _, cfg := range packStreams(o) {
		_, err := js.Stream(ctx, cfg.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			_, err = js.CreateStream(ctx, cfg)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				err = nil // another process of the pack made it meanwhile
			}
		}
		if err != nil {
			return fmt.Errorf("stream %s: %w", cfg.Name, err)
		}
	}
	if _, err := js.KeyValue(ctx, BucketAttempts); errors.Is(err, jetstream.ErrBucketNotFound) {
		_, err = js.CreateKeyValue(ctx, attemptsConfig(o.Replicas))
		if err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			return fmt.Errorf("bucket %s: %w", BucketAttempts, err)
		}
	}
	return nil
}

// aggDuplicates is the aggregate log's Nats-Msg-Id window. The runner
// needs none: it appends with the expected last sequence and message id,
// and a duplicate only tells it, as a conflict would, that it was deposed.
// A short window keeps NATS from holding an id per decision for minutes
// (about 100 MB per million CARs ingested within the default window).
const aggDuplicates = 10 * time.Second

// LeaseTTL is how long a leadership lease lives without renewal: the
// FERRY_LEADER bucket's TTL, which the server applies as the stream's
// max age (each replica removes the key on its own once its last
// renewal is that old). It bounds how long the aggregator stops after
// its leader dies; aggregator/lease.go sizes the renewals and the
// holder's fence from it.
const LeaseTTL = 2 * time.Second

// AckWait bounds every wait for a stream's acknowledgement of a publish
// or an append, synchronous or not. Without it an asynchronous publish
// sent as a stream leader dies may never be answered, and its writer waits
// for good (the aggregator would keep renewing its lease meanwhile). It is
// nats.go's own default for a synchronous publish: the duplicate windows
// (DefaultDuplicates) are sized to cover it and a retry.
const AckWait = 5 * time.Second

// NewJetStream is jetstream.New(nc, opts...) with every acknowledgement
// wait bounded by AckWait. Every JetStream context of ferry's processes
// comes from it.
func NewJetStream(nc *nats.Conn, opts ...jetstream.JetStreamOpt) (jetstream.JetStream, error) {
	return jetstream.New(nc, append([]jetstream.JetStreamOpt{
		jetstream.WithPublishAsyncTimeout(AckWait),
		jetstream.WithDefaultTimeout(AckWait),
	}, opts...)...)
}

// Publisher appends input events to the input log.
type Publisher struct {
	js  jetstream.JetStream
	sub Subjects
	// Gate, when set, says why the log cannot be written now (nil: it
	// can). Publish asks it before sending and returns its error as is, so
	// a full disk is answered at once instead of after JetStream's silence
	// times out; and again after a failed publish, whose error it then
	// explains.
	Gate func() error
}

// NewPublisher returns a publisher on js.
func NewPublisher(js jetstream.JetStream, sub Subjects) *Publisher {
	return &Publisher{js: js, sub: sub}
}

// Published is the outcome of one publish.
type Published struct {
	Seq uint64
	// Duplicate is true when the stream had the same message id within its
	// duplicate window and stored nothing.
	Duplicate bool
}

// Publish appends ev and waits for the stream's acknowledgement, sending
// it again while it is unanswered, within AckWait (see publish).
// Duplicate is then also true when a try found an earlier try of this
// very publish stored.
func (p *Publisher) Publish(ctx context.Context, ev events.Event) (Published, error) {
	if err := p.gate(); err != nil {
		return Published{}, err
	}
	msg, err := p.Msg(ev)
	if err != nil {
		return Published{}, err
	}
	ack, err := publish(ctx, p.js, msg)
	if err != nil {
		if gerr := p.gate(); gerr != nil {
			return Published{}, fmt.Errorf("%w (publish %s: %v)", gerr, ev.Kind(), err)
		}
		return Published{}, fmt.Errorf("publish %s: %w", ev.Kind(), err)
	}
	return Published{Seq: ack.Sequence, Duplicate: ack.Duplicate}, nil
}

// PublishTry is how long one try of a publish waits for its
// acknowledgement before the same message is sent again. A stream that
// lost its leader answers nothing; the try after its election is answered
// at once, so this bounds how late after the election a publish is
// stored.
const PublishTry = 500 * time.Millisecond

// publish sends msg, and sends it again every PublishTry while it is
// unanswered, within AckWait in all. Every message ferry publishes to a
// stream carries a message id the stream dedupes within its window
// (longer than AckWait), so a try after one that was stored is answered
// as a duplicate of it and stores nothing.
func publish(ctx context.Context, js jetstream.JetStream, msg *nats.Msg) (*jetstream.PubAck, error) {
	deadline := time.Now().Add(AckWait)
	for {
		end := time.Now().Add(PublishTry)
		if end.After(deadline) {
			end = deadline
		}
		tctx, cancel := context.WithDeadline(ctx, end)
		ack, err := js.PublishMsg(tctx, msg)
		cancel()
		if err == nil || ctx.Err() != nil || !Unanswered(err) || !time.Now().Before(deadline) {
			return ack, err
		}
		// An answer that comes at once (no responders) waits out the try.
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Until(end)):
		}
	}
}

// errDuplicateInProcess is JetStream's answer to a message whose id an
// earlier message, not yet stored, carries: a try sent while the one
// before it is still being replicated.
const errDuplicateInProcess jetstream.ErrorCode = 10158

// Unanswered reports whether err says only that a publish or request was
// not settled: no answer in time, no stream leader or no server for the
// moment, no connection, or an earlier try of the same message still
// being stored. The same message may be sent again.
func Unanswered(err error) bool {
	for _, e := range []error{context.DeadlineExceeded, jetstream.ErrAsyncPublishTimeout, jetstream.ErrNoStreamResponse,
		nats.ErrNoResponders, nats.ErrTimeout, nats.ErrConnectionClosed, nats.ErrConnectionReconnecting,
		nats.ErrConnectionDraining, nats.ErrDisconnected} {
		if errors.Is(err, e) {
			return true
		}
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errDuplicateInProcess
}

func (p *Publisher) gate() error {
	if p.Gate == nil {
		return nil
	}
	return p.Gate()
}

// PublishAsync appends ev without waiting; the future says how it went.
func (p *Publisher) PublishAsync(ev events.Event) (jetstream.PubAckFuture, error) {
	msg, err := p.Msg(ev)
	if err != nil {
		return nil, err
	}
	return p.js.PublishMsgAsync(msg)
}

// Msg is the NATS message for ev: its subject, body and Nats-Msg-Id.
func (p *Publisher) Msg(ev events.Event) (*nats.Msg, error) {
	data, err := events.Encode(ev)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", ev.Kind(), err)
	}
	msg := nats.NewMsg(p.sub.Input(ev.Kind()))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, events.BoundedID(ev.MsgID()))
	return msg, nil
}

// errWrongLastMsgID is JetStream's "last msgid mismatch" error code.
const errWrongLastMsgID jetstream.ErrorCode = 10070

// IsConflict reports whether err is JetStream's wrong-last-sequence error:
// another writer appended first (wrong last sequence or last message id).
func IsConflict(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeStreamWrongLastSequence, jetstream.JSErrCodeStreamWrongLastSequenceConstant, errWrongLastMsgID:
			return true
		}
	}
	return false
}

// ErrStorageFull means the log cannot be written because its disk is full
// (or below the reserve ferry keeps free). It passes once space is freed.
var ErrStorageFull = errors.New("disk full")

// errInsufficientResources is JetStream's "insufficient resources": the
// server's storage limit (by default 75% of the disk space free when it
// started) is reached.
const errInsufficientResources jetstream.ErrorCode = 10047

// IsStorageFull reports whether err means the log's storage is full:
// ErrStorageFull, JetStream's insufficient resources, or the operating
// system's "no space left on device" passed on by the server.
func IsStorageFull(err error) bool {
	if err == nil {
		return false
	}
	var apiErr *jetstream.APIError
	if errors.Is(err, ErrStorageFull) || errors.As(err, &apiErr) && apiErr.ErrorCode == errInsufficientResources {
		return true
	}
	return strings.Contains(err.Error(), "no space left on device")
}
