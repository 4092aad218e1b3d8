package projections

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"
)

// Pin statuses, the Pinning Service API's.
const (
	PinQueued  = "queued"
	PinPinning = "pinning"
	PinPinned  = "pinned"
	PinFailed  = "failed"
)

// Pin is one live pin request and the state of its CID's fetch: every
// request of a CID shares it, since a CID is fetched once.
type Pin struct {
	RequestID string            `json:"requestid"`
	CID       string            `json:"cid"`
	Name      string            `json:"name,omitempty"`
	Origins   []string          `json:"origins,omitempty"`
	Meta      map[string]string `json:"meta,omitempty"`
	Created   time.Time         `json:"created"`
	Fetch     PinFetch          `json:"-"`
}

// PinFetch is the state of a CID's fetch.
type PinFetch struct {
	Status  string `json:"status"`
	Attempt int    `json:"attempt,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Car     string `json:"car,omitempty"`
	Piece   string `json:"piece,omitempty"`
	URL     string `json:"url,omitempty"`
	// At is when the status last changed (the event's time).
	At time.Time `json:"at"`
}

// PinWant is a CID that needs fetching, with what its fetch needs.
type PinWant struct {
	CID     string
	Origins []string
	Source  json.RawMessage
	// Since is when the CID was requested, the fetch's deadline's start.
	Since time.Time
}

// PinHooks are how the pins projector tells the node what its fetch work
// is: Wanted for a CID that needs a fetch (no CAR, none queued or
// running, or the last one failed), Unwanted for a CID whose last live
// request was cancelled before it was pinned. They run after the change
// is committed, only while the projector follows the log.
type PinHooks struct {
	Wanted   func(ctx context.Context, w PinWant)
	Unwanted func(ctx context.Context, cid string)
}

var (
	bPinMeta   = []byte("meta")
	bPins      = []byte("pins")   // requestid → pin (JSON)
	bPinStatus = []byte("status") // status | 0 | created (unix ns, 8 bytes) | requestid → nil
	bPinCIDs   = []byte("cids")   // cid → cidRecord (JSON)
	kPinSeq    = []byte("seq")    // the input log sequence applied last
	pinBuckets = [][]byte{bPinMeta, bPins, bPinStatus, bPinCIDs}
)

// cidRecord is a CID's fetch and its live requests.
type cidRecord struct {
	PinFetch
	Requests []string        `json:"requests,omitempty"`
	Origins  []string        `json:"origins,omitempty"`
	Source   json.RawMessage `json:"source,omitempty"`
	Since    time.Time       `json:"since"`

	// What the status index holds of the record as it was read: putCID
	// moves the entries of its requests that changed.
	indexed       []string
	indexedStatus string
}

// PinStore is the pins read model, a bbolt file of its own (pins.db)
// built from the pin events of the input log.
type PinStore struct {
	db *bolt.DB

	mu      sync.Mutex
	applied chan struct{} // closed and replaced at each commit
	seq     uint64
}

// OpenPins opens or creates the pins read model at path.
func OpenPins(path string) (*PinStore, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("pins read model %s: %w", path, err)
	}
	s := &PinStore{db: db, applied: make(chan struct{})}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range pinBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		s.seq = decodeUint64(tx.Bucket(bPinMeta).Get(kPinSeq))
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the file.
func (s *PinStore) Close() error { return s.db.Close() }

// Seq is the input log sequence applied last.
func (s *PinStore) Seq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq
}

// WaitFor waits until the input at seq (or a later one) is applied.
func (s *PinStore) WaitFor(ctx context.Context, seq uint64) error {
	for {
		s.mu.Lock()
		done, ch := s.seq >= seq, s.applied
		s.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// effect is what a hook must hear of an applied event.
type effect struct {
	want     *PinWant
	unwanted string
}

// Apply applies the pin event at input sequence seq, and returns what the
// hooks must hear. An event at or below the applied sequence is skipped.
func (s *PinStore) Apply(seq uint64, ev events.Event) ([]effect, error) {
	var out []effect
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bPinMeta)
		if seq <= decodeUint64(meta.Get(kPinSeq)) {
			return nil
		}
		w := pinWriter{tx: tx}
		var err error
		out, err = w.apply(ev)
		if err != nil {
			return err
		}
		return meta.Put(kPinSeq, encodeUint64(seq))
	})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if seq > s.seq {
		s.seq = seq
		close(s.applied)
		s.applied = make(chan struct{})
	}
	s.mu.Unlock()
	return out, nil
}

type pinWriter struct{ tx *bolt.Tx }

func (w pinWriter) apply(ev events.Event) ([]effect, error) {
	switch e := ev.(type) {
	case *events.PinRequested:
		return w.requested(e)
	case *events.PinCancelled:
		return w.cancel(e.RequestID, e.At)
	case *events.PinFetching:
		return nil, w.updateCID(e.CID, func(r *cidRecord) {
			if r.Status == PinQueued && len(r.Requests) > 0 {
				r.Status, r.Attempt, r.At = PinPinning, e.Attempt, e.At
			}
		})
	case *events.PinFetched:
		return nil, w.updateCID(e.CID, func(r *cidRecord) {
			r.PinFetch = PinFetch{Status: PinPinned, Car: e.Car, Piece: e.Piece, URL: e.URL, Attempt: r.Attempt, At: e.At}
		})
	case *events.PinFailed:
		return nil, w.updateCID(e.CID, func(r *cidRecord) {
			if r.Status == PinQueued || r.Status == PinPinning {
				r.Status, r.Reason, r.At = PinFailed, e.Reason, e.At
			}
		})
	}
	return nil, nil
}

func (w pinWriter) requested(e *events.PinRequested) ([]effect, error) {
	if e.Validate() != nil || w.tx.Bucket(bPins).Get([]byte(e.RequestID)) != nil {
		// The API validates before it publishes; a forged or repeated
		// request changes nothing.
		return nil, nil
	}
	var out []effect
	if e.Replaces != "" {
		eff, err := w.cancel(e.Replaces, e.Created)
		if err != nil {
			return nil, err
		}
		out = append(out, eff...)
	}
	p := Pin{RequestID: e.RequestID, CID: e.CID, Name: e.Name, Origins: e.Origins, Meta: e.Meta, Created: e.Created.UTC()}
	if err := putJSON(w.tx.Bucket(bPins), []byte(p.RequestID), p); err != nil {
		return nil, err
	}
	r, err := w.cid(e.CID)
	if err != nil {
		return nil, err
	}
	idle := len(r.Requests) == 0 && r.Status != PinPinned
	r.Requests = append(r.Requests, e.RequestID)
	if idle || r.Status == PinFailed || r.Status == "" {
		// Nothing fetches it: this request starts a fetch. Unwanted
		// follows the cancellation that left a CID idle, so an idle
		// CID's fetch was withdrawn.
		r.PinFetch = PinFetch{Status: PinQueued, At: p.Created}
		r.Origins, r.Source, r.Since = e.Origins, e.Source, p.Created
		out = append(out, effect{want: &PinWant{CID: e.CID, Origins: e.Origins, Source: e.Source, Since: p.Created}})
	}
	return out, w.putCID(e.CID, r)
}

func (w pinWriter) cancel(id string, at time.Time) ([]effect, error) {
	var p Pin
	raw := w.tx.Bucket(bPins).Get([]byte(id))
	if raw == nil {
		return nil, nil
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, err
	}
	r, err := w.cid(p.CID)
	if err != nil {
		return nil, err
	}
	r.Requests = slices.DeleteFunc(r.Requests, func(s string) bool { return s == id })
	var out []effect
	if len(r.Requests) == 0 && (r.Status == PinQueued || r.Status == PinPinning) {
		out = append(out, effect{unwanted: p.CID})
		r.PinFetch = PinFetch{At: at}
	}
	// The index entry goes first: it is found by the pin's created time.
	if err := w.putCID(p.CID, r); err != nil {
		return nil, err
	}
	return out, w.tx.Bucket(bPins).Delete([]byte(id))
}

func (w pinWriter) cid(c string) (*cidRecord, error) {
	r := &cidRecord{}
	if raw := w.tx.Bucket(bPinCIDs).Get([]byte(c)); raw != nil {
		if err := json.Unmarshal(raw, r); err != nil {
			return nil, err
		}
	}
	r.indexed, r.indexedStatus = slices.Clone(r.Requests), r.Status
	return r, nil
}

// putCID stores a CID's record and moves its requests' entries in the
// status index (and its counts) to what the record now says.
func (w pinWriter) putCID(c string, r *cidRecord) error {
	for _, id := range r.indexed {
		if r.indexedStatus != r.Status || !slices.Contains(r.Requests, id) {
			if err := w.index(r.indexedStatus, id, false); err != nil {
				return err
			}
		}
	}
	for _, id := range r.Requests {
		if r.indexedStatus != r.Status || !slices.Contains(r.indexed, id) {
			if err := w.index(r.Status, id, true); err != nil {
				return err
			}
		}
	}
	r.indexed, r.indexedStatus = slices.Clone(r.Requests), r.Status
	return putJSON(w.tx.Bucket(bPinCIDs), []byte(c), r)
}

// index adds (or removes) request id's entry under status, and counts it.
func (w pinWriter) index(status, id string, add bool) error {
	if status == "" {
		return nil // a CID without a fetch has no live request
	}
	var p Pin
	if err := json.Unmarshal(w.tx.Bucket(bPins).Get([]byte(id)), &p); err != nil {
		return fmt.Errorf("pin %s: %w", id, err)
	}
	b, meta, n := w.tx.Bucket(bPinStatus), w.tx.Bucket(bPinMeta), countKey(status)
	count := decodeUint64(meta.Get(n))
	key := statusKey(status, p.Created, id)
	if add {
		count++
		if err := b.Put(key, nil); err != nil {
			return err
		}
	} else {
		count--
		if err := b.Delete(key); err != nil {
			return err
		}
	}
	return meta.Put(n, encodeUint64(count))
}

func countKey(status string) []byte { return []byte("count/" + status) }

// updateCID changes the record of a CID ferry was asked to pin; events of
// other CIDs (forged, or of a request whose pin.requested is not stored)
// are ignored.
func (w pinWriter) updateCID(c string, fn func(*cidRecord)) error {
	if w.tx.Bucket(bPinCIDs).Get([]byte(c)) == nil {
		return nil
	}
	r, err := w.cid(c)
	if err != nil {
		return err
	}
	fn(r)
	return w.putCID(c, r)
}

func putJSON(b *bolt.Bucket, k []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, data)
}

// statusKey orders a status's requests by creation, then request id.
func statusKey(status string, t time.Time, id string) []byte {
	k := make([]byte, 0, len(status)+9+len(id))
	k = append(append(k, status...), 0)
	k = binary.BigEndian.AppendUint64(k, uint64(t.UnixNano()))
	return append(k, id...)
}

// Pin returns a live request, or ErrNotFound.
func (s *PinStore) Pin(id string) (Pin, error) {
	var p Pin
	err := s.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bPins).Get([]byte(id))
		if raw == nil {
			return ErrNotFound
		}
		return readPin(tx, raw, &p)
	})
	return p, err
}

func readPin(tx *bolt.Tx, raw []byte, p *Pin) error {
	if err := json.Unmarshal(raw, p); err != nil {
		return err
	}
	r, err := pinWriter{tx: tx}.cid(p.CID)
	if err != nil {
		return err
	}
	p.Fetch = r.PinFetch
	return nil
}

// PinsOf returns the live requests of a CID, oldest first, and its fetch.
func (s *PinStore) PinsOf(c string) ([]Pin, PinFetch, error) {
	var pins []Pin
	var f PinFetch
	err := s.db.View(func(tx *bolt.Tx) error {
		r, err := pinWriter{tx: tx}.cid(c)
		if err != nil {
			return err
		}
		f = r.PinFetch
		for _, id := range r.Requests {
			var p Pin
			if raw := tx.Bucket(bPins).Get([]byte(id)); raw != nil {
				if err := readPin(tx, raw, &p); err != nil {
					return err
				}
				pins = append(pins, p)
			}
		}
		return nil
	})
	return pins, f, err
}

// PinQuery filters a listing of pins, the Pinning Service API's filters.
type PinQuery struct {
	CIDs []string
	// Name and Match: exact, iexact, partial or ipartial (exact if empty).
	Name, Match string
	// Statuses (any of them); every status if empty.
	Statuses []string
	// Before and After bound the creation time (exclusive) when not zero.
	Before, After time.Time
	// Meta must be contained in a pin's meta.
	Meta  map[string]string
	Limit int
}

func (q PinQuery) match(p Pin) bool {
	if len(q.CIDs) > 0 && !slices.Contains(q.CIDs, p.CID) {
		return false
	}
	if q.Name != "" {
		switch q.Match {
		case "iexact":
			if !strings.EqualFold(p.Name, q.Name) {
				return false
			}
		case "partial":
			if !strings.Contains(p.Name, q.Name) {
				return false
			}
		case "ipartial":
			if !strings.Contains(strings.ToLower(p.Name), strings.ToLower(q.Name)) {
				return false
			}
		default:
			if p.Name != q.Name {
				return false
			}
		}
	}
	if len(q.Statuses) > 0 && !slices.Contains(q.Statuses, p.Fetch.Status) {
		return false
	}
	if !q.Before.IsZero() && !p.Created.Before(q.Before) {
		return false
	}
	if !q.After.IsZero() && !p.Created.After(q.After) {
		return false
	}
	for k, v := range q.Meta {
		if got, ok := p.Meta[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Pins lists the live requests q matches, newest first, at most q.Limit,
// and counts every match. The CID filter reads only the CIDs' requests;
// otherwise the status index is read newest first, each status's entries
// merged: a query by status alone reads Limit requests and takes its count
// from the index's counts, one with other filters reads every request of
// its statuses.
func (s *PinStore) Pins(q PinQuery) ([]Pin, int, error) {
	var out []Pin
	count := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		take := func(p Pin) {
			if q.match(p) {
				count++
				if len(out) < q.Limit {
					out = append(out, p)
				}
			}
		}
		if len(q.CIDs) > 0 {
			var all []Pin
			for _, c := range q.CIDs {
				r, err := pinWriter{tx: tx}.cid(c)
				if err != nil {
					return err
				}
				for _, id := range r.Requests {
					var p Pin
					if raw := tx.Bucket(bPins).Get([]byte(id)); raw != nil {
						if err := readPin(tx, raw, &p); err != nil {
							return err
						}
						all = append(all, p)
					}
				}
			}
			slices.SortFunc(all, func(a, b Pin) int {
				if c := b.Created.Compare(a.Created); c != 0 {
					return c
				}
				return strings.Compare(b.RequestID, a.RequestID)
			})
			for _, p := range all {
				take(p)
			}
			return nil
		}
		statuses := q.Statuses
		if len(statuses) == 0 {
			statuses = []string{PinQueued, PinPinning, PinPinned, PinFailed}
		}
		byStatusOnly := q.Name == "" && len(q.Meta) == 0 && q.Before.IsZero() && q.After.IsZero()
		if byStatusOnly {
			for _, st := range slices.Compact(slices.Sorted(slices.Values(statuses))) {
				count += int(decodeUint64(tx.Bucket(bPinMeta).Get(countKey(st))))
			}
		}
		heads := newestFirst(tx.Bucket(bPinStatus), statuses)
		for id := heads.next(); id != ""; id = heads.next() {
			if byStatusOnly && len(out) == q.Limit {
				break
			}
			var p Pin
			if err := readPin(tx, tx.Bucket(bPins).Get([]byte(id)), &p); err != nil {
				return err
			}
			if byStatusOnly {
				out = append(out, p)
				continue
			}
			take(p)
		}
		return nil
	})
	return out, count, err
}

// merged walks the status index's entries of several statuses, newest
// first (created, then request id, both descending).
type merged struct {
	curs []*bolt.Cursor
	pre  [][]byte
	keys [][]byte // each cursor's current key past its status prefix, nil when done
}

func newestFirst(b *bolt.Bucket, statuses []string) *merged {
	m := &merged{}
	for _, st := range slices.Compact(slices.Sorted(slices.Values(statuses))) {
		pre := append([]byte(st), 0)
		c := b.Cursor()
		// The last key of the prefix: seek past it, step back.
		end := append([]byte(st), 1)
		k, _ := c.Seek(end)
		if k == nil {
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
		m.curs, m.pre = append(m.curs, c), append(m.pre, pre)
		m.keys = append(m.keys, m.within(len(m.pre)-1, k))
	}
	return m
}

func (m *merged) within(i int, k []byte) []byte {
	if k == nil || !bytes.HasPrefix(k, m.pre[i]) {
		return nil
	}
	return k[len(m.pre[i]):]
}

// next is the request id of the newest entry left, "" when none is.
func (m *merged) next() string {
	best := -1
	for i, k := range m.keys {
		if k != nil && (best < 0 || bytes.Compare(k, m.keys[best]) > 0) {
			best = i
		}
	}
	if best < 0 {
		return ""
	}
	id := string(m.keys[best][8:])
	k, _ := m.curs[best].Prev()
	m.keys[best] = m.within(best, k)
	return id
}

// Wanted lists every CID with live requests whose fetch is queued or
// running: the work a node puts back on the queue when it starts.
func (s *PinStore) Wanted() ([]PinWant, error) {
	var out []PinWant
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bPinCIDs).ForEach(func(k, v []byte) error {
			var r cidRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			if len(r.Requests) > 0 && (r.Status == PinQueued || r.Status == PinPinning) {
				out = append(out, PinWant{CID: string(k), Origins: r.Origins, Source: r.Source, Since: r.Since})
			}
			return nil
		})
	})
	return out, err
}

// PinProjector builds the pins read model from the pin events of the
// input log.
type PinProjector struct {
	js    jetstream.JetStream
	sub   jetlog.Subjects
	store *PinStore
	hooks PinHooks
}

// NewPinProjector returns a projector of the pin events under sub into
// store, telling hooks (either may be nil) of fetch work.
func NewPinProjector(js jetstream.JetStream, sub jetlog.Subjects, store *PinStore, hooks PinHooks) *PinProjector {
	return &PinProjector{js: js, sub: sub, store: store, hooks: hooks}
}

// Run applies the pin events after the store's sequence. With follow it
// runs until ctx ends and runs the hooks; without it returns once the
// events that were in the log when it started are applied.
func (p *PinProjector) Run(ctx context.Context, follow bool) error {
	return jetlog.TailSubject(ctx, p.js, jetlog.StreamIn, p.sub.Pins(), p.store.Seq()+1, follow, func(e jetlog.Entry) error {
		ev, err := events.Decode(e.Data)
		if err != nil {
			// Not a pin event the API would publish: nothing to apply,
			// but the position moves on.
			ev = nil
		}
		effects, err := p.store.Apply(e.Seq, ev)
		if err != nil {
			return fmt.Errorf("pins read model, input %d: %w", e.Seq, err)
		}
		if !follow {
			return nil
		}
		for _, f := range effects {
			switch {
			case f.want != nil && p.hooks.Wanted != nil:
				p.hooks.Wanted(ctx, *f.want)
			case f.unwanted != "" && p.hooks.Unwanted != nil:
				p.hooks.Unwanted(ctx, f.unwanted)
			}
		}
		return nil
	})
}
