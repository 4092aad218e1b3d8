package node

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats-server/v2/server"
)

// A full disk.
//
// When the disk under the embedded JetStream fills, the file store that
// meets ENOSPC keeps the error: every later write to its stream fails
// without an answer, so publishers wait out their 5-s timeout, and it stays
// so after space is freed, until the store is reopened. The disk watch
// therefore
//
//   - checks the free space of the data dir (and the JetStream dir) every
//     diskPoll and, below the reserve (--min-free), refuses publishes at
//     once with jetlog.ErrStorageFull, before JetStream meets ENOSPC;
//   - asks the server for a stream's kept write error, which also refuses
//     publishes and fails /healthz;
//   - once the reserve is free again, reopens JetStream (natsembed.Reopen),
//     which recovers every stream from its files and clears the error,
//     restarts the aggregator and the projector, whose consumers vanished
//     with it (Node.reopenable), and wakes the parts waiting out a backoff
//     (Node.retry), so ingest and aggregation resume within a poll and a
//     restart.
//
// Joined to an external NATS the server's disk is not ferry's to watch:
// the watch covers the data dir (the read models) for /healthz only, and
// JetStream's own refusals (insufficient resources) are still answered as
// a full disk.
const (
	diskPoll = 250 * time.Millisecond
	// reopenFree is the least free space JetStream is reopened with: one
	// message of the largest size fits.
	reopenFree = 1 << 20
	// reopenEvery spaces reopens when the write error is not the disk's.
	reopenEvery = 2 * time.Second
)

// DefaultMinFree is the free space `ferry serve` keeps on its disk by
// default (--min-free): room for what is in flight between two checks.
const DefaultMinFree = 64 << 20

type diskWatch struct {
	dirs    []string
	reserve uint64
	server  *server.Server // nil when joined to an external NATS
	embed   natsembed.Config
	log     *slog.Logger
	// recovered is called when the log can be written again; onReopen,
	// before it, when JetStream was reopened for that.
	recovered, onReopen func()

	mu         sync.Mutex
	err        error
	lastReopen time.Time
}

// Err is why the log cannot be written now, or nil.
func (d *diskWatch) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// gate is Publisher.Gate: only the embedded server's log is on this disk.
func (d *diskWatch) gate() error {
	if d.server == nil {
		return nil
	}
	return d.Err()
}

func (d *diskWatch) run(ctx context.Context) error {
	t := time.NewTicker(diskPoll)
	defer t.Stop()
	for {
		d.poll(time.Now())
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (d *diskWatch) poll(now time.Time) {
	free, dir, known := d.free()
	low := known && free < d.reserve
	var werr error
	if d.server != nil {
		werr = natsembed.WriteErr(d.server)
	}
	switch {
	case low:
		what := "the read models"
		if d.server != nil {
			what = "the input log"
		}
		d.set(fmt.Errorf("%w: %s cannot be written (%s has %s free, under the %s reserve set by --min-free); free space to resume",
			jetlog.ErrStorageFull, what, dir, formatBytes(free), formatBytes(d.reserve)))
	case werr != nil && (!known || free >= reopenFree) && now.Sub(d.lastReopen) >= reopenEvery:
		d.lastReopen = now
		if err := natsembed.Reopen(d.server, d.embed); err != nil {
			d.set(fmt.Errorf("the input log cannot be written (%v), and reopening JetStream failed: %w", werr, err))
			return
		}
		d.log.Info("JetStream reopened: the disk has room again", "was", werr, "free", formatBytes(free))
		if d.onReopen != nil {
			d.onReopen()
		}
		d.set(nil)
	case werr != nil:
		if jetlog.IsStorageFull(werr) {
			werr = fmt.Errorf("%w: the input log cannot be written (%v)", jetlog.ErrStorageFull, werr)
		} else {
			werr = fmt.Errorf("the input log cannot be written: %w", werr)
		}
		d.set(werr)
	default:
		d.set(nil)
	}
}

// free is the least free space of the watched dirs, and which dir it is;
// known is false where the platform cannot tell.
func (d *diskWatch) free() (free uint64, dir string, known bool) {
	for _, p := range d.dirs {
		f, ok := freeSpace(p)
		if ok && (!known || f < free) {
			free, dir, known = f, p, true
		}
	}
	return free, dir, known
}

// set records the state, logs its changes and calls recovered when it
// clears.
func (d *diskWatch) set(err error) {
	d.mu.Lock()
	was := d.err
	d.err = err
	d.mu.Unlock()
	switch {
	case was == nil && err != nil:
		d.log.Error("writes refused", "err", err)
	case was != nil && err == nil:
		d.log.Info("writes resumed", "was", was)
		if d.recovered != nil {
			d.recovered()
		}
	}
}

// formatBytes is n in the largest binary unit that keeps a digit before
// the point.
func formatBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/unit, 0
	for v >= unit && i < 3 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %s", v, []string{"KiB", "MiB", "GiB", "TiB"}[i])
}
