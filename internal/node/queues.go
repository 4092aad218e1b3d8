package node

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/ferry-dev/ferry/fetchworker"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/packworker"
	"github.com/ferry-dev/ferry/pieceworker"
	"github.com/ferry-dev/ferry/workqueue"
	"github.com/nats-io/nats.go/jetstream"
)

// StreamStat is one of ferry's streams as JetStream holds it.
type StreamStat struct {
	Name     string
	Messages uint64
	Bytes    uint64
	LastSeq  uint64
	// Err is why the stream could not be read (empty when it was).
	Err string
}

// Queue is one of ferry's work queues under the name /metrics labels it
// with (piece, fetch, pack).
type Queue struct {
	Label string
	workqueue.Queue
}

// Queues are the work queues ferry's workers take items from, the one list
// /metrics and the dashboard read. Their streams are the same under every
// subject prefix.
var Queues = workQueues(jetlog.DefaultSubjects)

func workQueues(sub jetlog.Subjects) []Queue {
	return []Queue{
		{Label: "piece", Queue: pieceworker.Queue(sub)},
		{Label: "fetch", Queue: fetchworker.Queue(sub)},
		{Label: "pack", Queue: packworker.Queue(sub)},
	}
}

// Streams are the streams StreamStats reads: the logs, then each queue's
// work and dead-letter streams.
var Streams = []string{
	jetlog.StreamIn, jetlog.StreamAgg, jetlog.StreamReceipts,
	jetlog.StreamWork, jetlog.StreamDLQ, jetlog.StreamFetch, jetlog.StreamFetchDLQ,
	jetlog.StreamPack, jetlog.StreamPackDLQ, jetlog.StreamPackDone,
}

// StreamStats reads the state of ferry's streams (Streams), in that
// order. A stream that does not exist (a queue nothing has used yet) is
// left out; one that cannot be read has its Err set. ctx bounds the whole
// call: a slow NATS makes it return what it has.
func StreamStats(ctx context.Context, js jetstream.JetStream) []StreamStat {
	out := make([]StreamStat, 0, len(Streams))
	for _, name := range Streams {
		st := StreamStat{Name: name}
		s, err := js.Stream(ctx, name)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			continue
		case err != nil:
			st.Err = err.Error()
		default:
			state := s.CachedInfo().State
			st.Messages, st.Bytes, st.LastSeq = state.Msgs, state.Bytes, state.LastSeq
		}
		out = append(out, st)
	}
	return out
}

// streamCache keeps the last StreamStats for scrapes: a scrape waits at
// most wait for a fresh read and otherwise gets the last one, so a NATS
// that answers slowly (or not at all) cannot hang /metrics. One read runs
// at a time, each bounded by timeout.
type streamCache struct {
	js      jetstream.JetStream
	maxAge  time.Duration // a read younger than this is served as it is
	wait    time.Duration
	timeout time.Duration

	mu      sync.Mutex
	stats   []StreamStat
	at      time.Time
	reading chan struct{} // closed when the read under way ends; nil when none
}

func newStreamCache(js jetstream.JetStream) *streamCache {
	return &streamCache{js: js, maxAge: 5 * time.Second, wait: time.Second, timeout: 10 * time.Second}
}

// get returns the stream stats, read again when older than maxAge, and
// when they were read (zero before the first read ends).
func (c *streamCache) get() ([]StreamStat, time.Time) {
	c.mu.Lock()
	if time.Since(c.at) < c.maxAge {
		defer c.mu.Unlock()
		return c.stats, c.at
	}
	done := c.reading
	if done == nil {
		done = make(chan struct{})
		c.reading = done
		go c.read(done)
	}
	c.mu.Unlock()
	select {
	case <-done:
	case <-time.After(c.wait):
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats, c.at
}

func (c *streamCache) read(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	stats := StreamStats(ctx, c.js)
	c.mu.Lock()
	c.stats, c.at, c.reading = stats, time.Now(), nil
	c.mu.Unlock()
	close(done)
}

// Streams is ferry's streams as last read (at most a few seconds old, or
// older while NATS does not answer), and when they were read.
func (n *Node) Streams() ([]StreamStat, time.Time) { return n.streams.get() }
