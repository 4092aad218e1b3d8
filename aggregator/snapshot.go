package aggregator

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/ferry-dev/ferry/events"
)

// A snapshot of the state is every field of State but the dedupe set
// (which the seen index persists on its own), in one canonical encoding:
// the same state always encodes to the same bytes, whatever order its maps
// were filled in. So a state rebuilt from the log and one loaded from a
// snapshot can be compared byte for byte, and two leaders that fold the
// same log write the same snapshot.
//
// Layout (version 2), integers as unsigned varints unless said:
//
//	"ferry-state" version
//	settings: the log's first, then the current (each length-prefixed
//	JSON of events.Settings) recorded(byte)
//	lastIn now(time) nextID accepted(count of the dedupe set)
//	queued: n, then per CAR in CID order: cid(string) size claim(string) group(string)
//	ingesting: n, then per aggregate in id order: an aggregate
//	closed: n, then per aggregate in id order: an aggregate
//	byRoot: n, then per root in byte order: root(32 bytes) id
//	pending: n ids, in order; waiting: n ids, in order
//
// An aggregate is: id group(string) state(string) tries(signed) used
// payload since offeredAt requeueAt, members (n, then root(32 bytes)
// padded size each, in arrival order), deals (n, then provider(string) id
// each, in (provider, id) order). A time is 0, or 1 and Unix seconds
// (signed) and nanoseconds: the fold's times are all UTC, so nothing else
// is kept. The group queue and the ripe set follow from the INGESTING
// aggregates and the settings, and are rebuilt from them.
const (
	snapshotMagic   = "ferry-state"
	snapshotVersion = 2
)

// ErrSnapshot is returned by LoadSnapshot for bytes that are not a
// snapshot this version of ferry reads, or that disagree with what they
// are loaded with.
var ErrSnapshot = errors.New("unusable state snapshot")

// MarshalSnapshot appends the canonical encoding of the state without its
// dedupe set to dst. Its cost is that of the state without the dedupe
// set: the queued CARs, the members of the aggregates not yet processed,
// and one small record per closed aggregate.
func (s *State) MarshalSnapshot(dst []byte) []byte {
	w := snapWriter{b: append(dst, snapshotMagic...)}
	w.u(snapshotVersion)
	for _, c := range []events.Settings{s.origin, s.cfg} {
		enc, err := json.Marshal(c)
		if err != nil {
			panic(fmt.Sprintf("aggregator: settings do not marshal: %v", err)) // plain numbers, strings and bools
		}
		w.bytes(enc)
	}
	w.bool(s.recorded)
	w.u(s.lastIn)
	w.time(s.now)
	w.u(s.nextID)
	w.u(uint64(s.accepted.Len()))

	cars := slices.Sorted(maps.Keys(s.queued))
	w.u(uint64(len(cars)))
	for _, car := range cars {
		q := s.queued[car]
		w.str(car)
		w.u(q.size)
		w.str(q.claim)
		w.str(q.group)
	}
	live := s.liveIDs()
	w.u(uint64(len(live)))
	for _, id := range live {
		w.aggregate(s.live[id])
	}
	ids := slices.Sorted(maps.Keys(s.closed))
	w.u(uint64(len(ids)))
	for _, id := range ids {
		w.aggregate(s.closed[id])
	}
	roots := slices.SortedFunc(maps.Keys(s.byRoot), func(a, b [32]byte) int { return bytes.Compare(a[:], b[:]) })
	w.u(uint64(len(roots)))
	for _, r := range roots {
		w.b = append(w.b, r[:]...)
		w.u(s.byRoot[r])
	}
	w.ids(s.pending)
	w.ids(s.waiting)
	return w.b
}

// LoadSnapshot returns the state data encodes (MarshalSnapshot), with acc
// as its dedupe set: acc must hold exactly the CARs accepted as of the
// snapshot (the seen index opened at the snapshot's manifest). The
// snapshot must be of a log made under cfg (its policy may have changed
// since, by settings.change), and acc must hold as many CARs as the state
// counted; otherwise it returns ErrSnapshot.
func LoadSnapshot(data []byte, cfg events.Settings, acc Accepted) (*State, error) {
	r := snapReader{b: data}
	if !bytes.HasPrefix(data, []byte(snapshotMagic)) {
		return nil, fmt.Errorf("%w: not a state snapshot", ErrSnapshot)
	}
	r.b = r.b[len(snapshotMagic):]
	if v := r.u(); v != snapshotVersion {
		return nil, fmt.Errorf("%w: version %d, this ferry reads %d", ErrSnapshot, v, snapshotVersion)
	}
	s := NewWith(cfg, acc)
	var origin events.Settings
	if err := json.Unmarshal(r.bytes(), &origin); r.err == nil && err != nil {
		return nil, fmt.Errorf("%w: settings: %v", ErrSnapshot, err)
	}
	if r.err == nil && origin != cfg {
		return nil, fmt.Errorf("%w: taken under settings %s, not %s", ErrSnapshot, origin, cfg)
	}
	// Into a zero value: a field the JSON leaves out is zero, not cfg's.
	var now events.Settings
	if err := json.Unmarshal(r.bytes(), &now); r.err == nil && err != nil {
		return nil, fmt.Errorf("%w: settings: %v", ErrSnapshot, err)
	}
	s.origin, s.cfg = origin, now
	s.recorded = r.bool()
	s.lastIn = r.u()
	s.now = r.time()
	s.nextID = r.u()
	if n := r.u(); r.err == nil && n != uint64(acc.Len()) {
		return nil, fmt.Errorf("%w: it counts %d accepted CARs, the dedupe set holds %d", ErrSnapshot, n, acc.Len())
	}
	for n := r.count(); n > 0; n-- {
		car := r.str()
		s.queued[car] = queuedCar{size: r.u(), claim: r.str(), group: r.str()}
	}
	for n := r.count(); n > 0; n-- {
		a := r.aggregate()
		if s.live[a.id] != nil || s.ingesting[a.group] != nil {
			r.fail("an INGESTING aggregate")
			break
		}
		s.ingesting[a.group], s.live[a.id] = a, a
		s.ingestingCARs += len(a.members)
		if a.group != "" {
			s.groupQueue = append(s.groupQueue, a.id) // in id order: the order they opened
		}
	}
	s.ripen()
	for n := r.count(); n > 0; n-- {
		a := r.aggregate()
		s.closed[a.id] = a
	}
	for n := r.count(); n > 0; n-- {
		var root [32]byte
		copy(root[:], r.take(32))
		s.byRoot[root] = r.u()
	}
	s.pending = r.ids()
	s.waiting = r.ids()
	if r.err == nil && len(r.b) > 0 {
		r.err = fmt.Errorf("%d bytes after the end", len(r.b))
	}
	if r.err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshot, r.err)
	}
	return s, nil
}

type snapWriter struct{ b []byte }

func (w *snapWriter) u(v uint64)     { w.b = binary.AppendUvarint(w.b, v) }
func (w *snapWriter) i(v int64)      { w.b = binary.AppendVarint(w.b, v) }
func (w *snapWriter) bytes(p []byte) { w.u(uint64(len(p))); w.b = append(w.b, p...) }
func (w *snapWriter) str(s string)   { w.u(uint64(len(s))); w.b = append(w.b, s...) }

func (w *snapWriter) bool(v bool) {
	if v {
		w.b = append(w.b, 1)
	} else {
		w.b = append(w.b, 0)
	}
}

func (w *snapWriter) time(t time.Time) {
	w.bool(!t.IsZero())
	if !t.IsZero() {
		w.i(t.Unix())
		w.u(uint64(t.Nanosecond()))
	}
}

func (w *snapWriter) ids(ids []uint64) {
	w.u(uint64(len(ids)))
	for _, id := range ids {
		w.u(id)
	}
}

func (w *snapWriter) aggregate(a *aggregate) {
	w.u(a.id)
	w.str(a.group)
	w.str(a.state)
	w.i(int64(a.tries))
	w.u(a.used)
	w.u(a.payload)
	w.time(a.since)
	w.time(a.offeredAt)
	w.time(a.requeueAt)
	w.u(uint64(len(a.members)))
	for _, m := range a.members {
		w.b = append(w.b, m.root[:]...)
		w.u(m.padded)
		w.u(m.size)
	}
	deals := slices.SortedFunc(maps.Keys(a.deals), func(x, y dealKey) int {
		return cmp.Or(cmp.Compare(x.provider, y.provider), cmp.Compare(x.id, y.id))
	})
	w.u(uint64(len(deals)))
	for _, d := range deals {
		w.str(d.provider)
		w.u(d.id)
	}
}

// snapReader reads what snapWriter wrote. The first error sticks: every
// later read returns zero values, and the caller checks err once.
type snapReader struct {
	b   []byte
	err error
}

func (r *snapReader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("truncated or corrupt at %s", what)
	}
	r.b = nil
}

func (r *snapReader) u() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("an unsigned number")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *snapReader) i() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("a signed number")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *snapReader) take(n uint64) []byte {
	if uint64(len(r.b)) < n {
		r.fail(fmt.Sprintf("%d bytes", n))
		return nil
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}

// count reads a number of items that follow, each at least one byte: one
// larger than the bytes left is corruption, not a reason to allocate.
func (r *snapReader) count() uint64 {
	n := r.u()
	if n > uint64(len(r.b)) {
		r.fail("a count")
		return 0
	}
	return n
}

func (r *snapReader) bytes() []byte { return r.take(r.count()) }
func (r *snapReader) str() string   { return string(r.bytes()) }

func (r *snapReader) bool() bool {
	switch p := r.take(1); {
	case r.err != nil:
		return false
	case p[0] > 1:
		r.fail("a flag")
		return false
	default:
		return p[0] == 1
	}
}

func (r *snapReader) time() time.Time {
	if !r.bool() {
		return time.Time{}
	}
	sec := r.i()
	ns := r.u()
	if ns >= uint64(time.Second) {
		r.fail("a time")
		return time.Time{}
	}
	return time.Unix(sec, int64(ns)).UTC()
}

func (r *snapReader) ids() []uint64 {
	n := r.count()
	if n == 0 {
		return nil
	}
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = r.u()
	}
	return ids
}

func (r *snapReader) aggregate() *aggregate {
	a := &aggregate{id: r.u(), group: r.str(), state: r.str(), tries: int(r.i()), used: r.u(), payload: r.u()}
	a.since, a.offeredAt, a.requeueAt = r.time(), r.time(), r.time()
	if n := r.count(); n > 0 {
		a.members = make([]member, n)
		for i := range a.members {
			copy(a.members[i].root[:], r.take(32))
			a.members[i].padded = r.u()
			a.members[i].size = r.u()
		}
	}
	if n := r.count(); n > 0 {
		a.deals = make(map[dealKey]struct{}, n)
		for ; n > 0; n-- {
			a.deals[dealKey{provider: r.str(), id: r.u()}] = struct{}{}
		}
	}
	return a
}
