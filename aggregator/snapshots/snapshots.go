// Package snapshots keeps the aggregator's state snapshots, with the runs
// of its dedupe index, in the JetStream object store FERRY_SNAP, so that a
// new leader loads the latest snapshot and folds only the batches after
// it (aggregator.Snapshots).
//
// # Objects
//
//   - "snapshot": the latest snapshot (see Encode): the aggregate-log message
//     it follows (sequence, last input, SHA-256 of the message's data),
//     the state without its dedupe set (aggregator.State.MarshalSnapshot)
//     and the dedupe index's manifest (seen.Manifest). Storing a snapshot
//     replaces it.
//   - "runs/<hex sha256>": the dedupe index's run files, named by their
//     content (a seen.RunStore, Runs).
//
// # Rules
//
//   - A snapshot is used only for the log it was taken of: the log must
//     hold the very message it follows at its sequence (its SHA-256), and
//     it must have been taken under the settings the log is folded under.
//     One newer than the log (a restored older backup of FERRY_AGG), of
//     another log, or of other settings is passed over with the reason in
//     the process log, and the rebuild starts from sequence 1.
//   - Retention: once a snapshot is stored, every run its manifest does not
//     name is deleted, from the bucket and from the local cache.
//   - Runs are verified against their names wherever they are read from
//     (package seen), so neither a damaged bucket nor a damaged cache can
//     change a decision; they make a snapshot unusable instead.
package snapshots

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/aggregator/seen"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	// latestName is the object holding the latest snapshot.
	latestName = "snapshot"
	// runPrefix prefixes the objects holding runs.
	runPrefix = "runs/"
	// objectTimeout bounds one object's put or get. The JetStream context
	// bounds waits without a deadline by jetlog.AckWait, too short for a
	// run of hundreds of megabytes.
	objectTimeout = 10 * time.Minute
)

// Store keeps snapshots in FERRY_SNAP and the dedupe index's run files in
// a local cache directory. It implements aggregator.Snapshots.
type Store struct {
	js       jetstream.JetStream
	obs      jetstream.ObjectStore
	runs     Runs
	cacheDir string
	log      *slog.Logger

	mu         sync.Mutex
	prefetched string // the NUID of the snapshot object last prefetched
}

var _ aggregator.Snapshots = (*Store)(nil)

// Open opens the snapshots of FERRY_SNAP (jetlog.EnsureStreams creates
// it) with run files cached in cacheDir.
func Open(ctx context.Context, js jetstream.JetStream, cacheDir string, log *slog.Logger) (*Store, error) {
	obs, err := js.ObjectStore(ctx, jetlog.BucketSnap)
	if err != nil {
		return nil, fmt.Errorf("snapshot bucket %s: %w", jetlog.BucketSnap, err)
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("snapshot cache: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	return &Store{js: js, obs: obs, runs: Runs{obs}, cacheDir: cacheDir, log: log}, nil
}

// Runs is the store's seen.RunStore.
func (s *Store) Runs() Runs { return s.runs }

// Empty is the empty state under cfg with its dedupe set on disk.
func (s *Store) Empty(cfg events.Settings) (*aggregator.State, error) {
	if err := s.dropCached(nil); err != nil {
		return nil, err
	}
	return aggregator.NewWith(cfg, seen.New(s.cacheDir)), nil
}

// Freeze checkpoints st's dedupe index (a seen.Index: st comes from Empty
// or Latest).
func (s *Store) Freeze(st *aggregator.State) (func(context.Context) ([]byte, error), error) {
	ix, ok := st.Accepted().(*seen.Index)
	if !ok {
		return nil, fmt.Errorf("snapshots: the state's dedupe set is a %T, not a seen index", st.Accepted())
	}
	f := ix.Checkpoint()
	return func(ctx context.Context) ([]byte, error) { return f.Persist(ctx, s.runs) }, nil
}

// Store stores snap as the latest snapshot, then deletes the runs its
// manifest does not name.
func (s *Store) Store(ctx context.Context, snap aggregator.Snapshot) error {
	keep, err := seen.Manifest(snap.Seen).RunNames()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, objectTimeout)
	defer cancel()
	if _, err := s.obs.PutBytes(ctx, latestName, Encode(snap)); err != nil {
		return fmt.Errorf("store snapshot: %w", err)
	}
	return s.retain(ctx, keep)
}

// retain deletes the runs of the bucket that keep does not name.
func (s *Store) retain(ctx context.Context, keep []string) error {
	kept := make(map[string]bool, len(keep))
	for _, n := range keep {
		kept[n] = true
	}
	objs, err := s.obs.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list snapshot bucket: %w", err)
	}
	var errs []error
	for _, o := range objs {
		if name, ok := strings.CutPrefix(o.Name, runPrefix); ok && !kept[name] {
			errs = append(errs, s.obs.Delete(ctx, o.Name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete superseded runs: %w", err)
	}
	return nil
}

// Latest loads the stored snapshot if it is usable for the aggregate log
// whose last sequence is end (see the package rules); otherwise it
// returns a nil state and logs why.
func (s *Store) Latest(ctx context.Context, cfg events.Settings, end uint64) (*aggregator.State, uint64, error) {
	doc, err := s.get(ctx)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, 0, s.dropCached(nil)
	}
	if err == nil {
		var st *aggregator.State
		if st, err = s.load(ctx, cfg, end, doc); err == nil {
			s.log.Info("aggregator snapshot loaded", "aggregateLogSeq", doc.Seq, "lastInput", doc.LastIn)
			return st, doc.Seq, nil
		}
	}
	if ctx.Err() != nil {
		return nil, 0, ctx.Err()
	}
	s.log.Warn("aggregator snapshot not used: rebuilding from sequence 1", "reason", err)
	return nil, 0, nil
}

func (s *Store) get(ctx context.Context) (aggregator.Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, objectTimeout)
	defer cancel()
	data, err := s.obs.GetBytes(ctx, latestName)
	if err != nil {
		return aggregator.Snapshot{}, err
	}
	return Decode(data)
}

// load checks doc against the log and loads its state.
func (s *Store) load(ctx context.Context, cfg events.Settings, end uint64, doc aggregator.Snapshot) (*aggregator.State, error) {
	if doc.Seq > end {
		return nil, fmt.Errorf("%w: the snapshot follows message %d, the aggregate log ends at %d (a restored older backup of the log?)",
			ErrNotThisLog, doc.Seq, end)
	}
	st, err := s.js.Stream(ctx, jetlog.StreamAgg)
	if err != nil {
		return nil, err
	}
	msg, err := st.GetMsg(ctx, doc.Seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("%w: the aggregate log holds no message %d", ErrNotThisLog, doc.Seq)
	}
	if err != nil {
		return nil, fmt.Errorf("aggregate log %d: %w", doc.Seq, err)
	}
	if sha256.Sum256(msg.Data) != doc.Digest {
		return nil, fmt.Errorf("%w: the aggregate log holds another message at %d", ErrNotThisLog, doc.Seq)
	}
	m := seen.Manifest(doc.Seen)
	keep, err := m.RunNames()
	if err != nil {
		return nil, err
	}
	if err := s.dropCached(keep); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, objectTimeout)
	defer cancel()
	ix, err := seen.Open(ctx, m, s.runs, s.cacheDir)
	if err != nil {
		return nil, err
	}
	state, err := aggregator.LoadSnapshot(doc.State, cfg, ix)
	if err == nil && state.LastIn() != doc.LastIn {
		err = fmt.Errorf("%w: its state is at input %d, its message ends with %d", aggregator.ErrSnapshot, state.LastIn(), doc.LastIn)
	}
	if err != nil {
		ix.Close()
		return nil, err
	}
	return state, nil
}

// ErrNotThisLog is why a snapshot is passed over that was not taken of
// the aggregate log as it is now.
var ErrNotThisLog = errors.New("snapshot is not of this aggregate log")

// Prefetch brings the latest snapshot's runs into the cache and drops the
// cached runs it does not name; a snapshot already prefetched costs one
// lookup of its object's info.
func (s *Store) Prefetch(ctx context.Context) error {
	info, err := s.obs.GetInfo(ctx, latestName)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	s.mu.Lock()
	done := s.prefetched == info.NUID
	s.mu.Unlock()
	if done {
		return nil
	}
	doc, err := s.get(ctx)
	if err != nil {
		return err
	}
	m := seen.Manifest(doc.Seen)
	keep, err := m.RunNames()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, objectTimeout)
	defer cancel()
	if err := seen.Prefetch(ctx, m, s.runs, s.cacheDir); err != nil {
		return err
	}
	if err := s.dropCached(keep); err != nil {
		return err
	}
	s.mu.Lock()
	s.prefetched = info.NUID
	s.mu.Unlock()
	return nil
}

// dropCached removes the cached runs keep does not name. It is called
// only while no index uses the cache: before a rebuild opens one, and by
// a standby's prefetch (the runner keeps the two apart).
func (s *Store) dropCached(keep []string) error {
	kept := make(map[string]bool, len(keep))
	for _, n := range keep {
		kept[n] = true
	}
	ents, err := os.ReadDir(s.cacheDir)
	if err != nil {
		return fmt.Errorf("snapshot cache: %w", err)
	}
	for _, e := range ents {
		if name := e.Name(); runName(name) && !kept[name] {
			if err := os.Remove(filepath.Join(s.cacheDir, name)); err != nil {
				return fmt.Errorf("snapshot cache: %w", err)
			}
		}
	}
	return nil
}

// runName says whether name is a run's: lower-case hex SHA-256.
func runName(name string) bool {
	b, err := hex.DecodeString(name)
	return err == nil && len(b) == sha256.Size && hex.EncodeToString(b) == name
}

// Runs is a seen.RunStore on the snapshot bucket: run name → object
// "runs/<name>".
type Runs struct{ obs jetstream.ObjectStore }

var _ seen.RunStore = Runs{}

// Put stores r as the run name.
func (r Runs) Put(ctx context.Context, name string, rd io.Reader) error {
	ctx, cancel := context.WithTimeout(ctx, objectTimeout)
	defer cancel()
	_, err := r.obs.Put(ctx, jetstream.ObjectMeta{Name: runPrefix + name}, rd)
	return err
}

// Get opens the run name. The object store checks its digest as it is
// read; seen checks the content against the name.
func (r Runs) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	ctx, cancel := context.WithTimeout(ctx, objectTimeout)
	obj, err := r.obs.Get(ctx, runPrefix+name)
	if err != nil {
		cancel()
		return nil, err
	}
	return cancelOnClose{obj, cancel}, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelOnClose) Close() error { defer c.cancel(); return c.ReadCloser.Close() }

// Has says whether the run name is stored.
func (r Runs) Has(ctx context.Context, name string) (bool, error) {
	_, err := r.obs.GetInfo(ctx, runPrefix+name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return false, nil
	}
	return err == nil, err
}
