package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go/jetstream"
)

// reconcile settles the settings to fold under: the log's, when it has
// them (aggregator.Reconcile). A fixed setting given on the command line
// is held against the log's first settings, which no change may touch;
// a policy setting (minPayload, maxWait, groupBy, groupMaxWait) against
// the policy the log is folded under now, which `ferry settings set` may
// have changed since. A given flag that disagrees stops Start: a restart
// with other flags never refolds a live log under another policy.
func (n *Node) reconcile(ctx context.Context) error {
	logged, err := aggregator.LogSettings(ctx, n.JS)
	if err != nil {
		return err
	}
	want := n.cfg.Fold
	fixed, policy := map[string]bool{}, map[string]bool{}
	for name, given := range n.cfg.FoldGiven {
		if !given {
			continue
		}
		if isPolicy(name) {
			policy[name] = true
		} else {
			fixed[name] = true
		}
	}
	if n.cfg.Fold, err = aggregator.Reconcile(logged, want, fixed); err != nil {
		return err
	}
	if logged == nil {
		return nil
	}
	n.log.Info("settings from the aggregate log", "settings", logged.String())
	if len(policy) == 0 {
		return nil
	}
	now, err := CurrentSettings(ctx, n.JS, n.cfg.Subjects, *logged)
	if err != nil {
		return err
	}
	return checkPolicy(want, now, policy)
}

func isPolicy(name string) bool { return slices.Contains(events.PolicyNames, name) }

// checkPolicy is aggregator.ErrSettings naming every given policy setting
// of want that differs from now's, or nil.
func checkPolicy(want, now events.Settings, given map[string]bool) error {
	diffs := aggregator.Disagreements(want, now, given, "the log's now")
	if len(diffs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s; a live log's policy changes from a given input on with `ferry settings set` (recorded in the log), not with serve's flags: leave those flags out or change the policy with ferry settings set",
		aggregator.ErrSettings, strings.Join(diffs, ", "))
}

// CurrentSettings is the settings the aggregate log is folded under now:
// those of its latest log.settings decision, first being its first. The
// fold records one for each settings.change input it applies, so only the
// batches of those inputs are read: the input log lists them under their
// own subject, and the aggregate log's batches are in input order, so
// each is found by bisection. A settings.change the fold has not reached
// yet does not count.
func CurrentSettings(ctx context.Context, js jetstream.JetStream, subjects jetlog.Subjects, first events.Settings) (events.Settings, error) {
	in, err := js.Stream(ctx, jetlog.StreamIn)
	if err != nil {
		return first, fmt.Errorf("input log: %w", err)
	}
	subject := subjects.Input(events.TypeSettingsChange)
	var changes []uint64
	for seq := uint64(1); ; seq++ {
		m, err := in.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return first, fmt.Errorf("input log: %w", err)
		}
		changes = append(changes, m.Sequence)
		seq = m.Sequence
	}
	if len(changes) == 0 {
		return first, nil
	}
	agg, err := js.Stream(ctx, jetlog.StreamAgg)
	if err != nil {
		return first, fmt.Errorf("aggregate log: %w", err)
	}
	info, err := agg.Info(ctx)
	if err != nil {
		return first, fmt.Errorf("aggregate log: %w", err)
	}
	log := settingsLog{ctx: ctx, s: agg, first: info.State.FirstSeq, last: info.State.LastSeq}
	for i := len(changes) - 1; i >= 0; i-- {
		cfg, err := log.settingsAt(changes[i])
		if err != nil {
			return first, err
		}
		if cfg != nil {
			return *cfg, nil
		}
	}
	return first, nil
}

// settingsLog reads batches of the aggregate log by their input.
type settingsLog struct {
	ctx         context.Context
	s           jetstream.Stream
	first, last uint64
}

// batches decodes the batches of message seq.
func (l settingsLog) batches(seq uint64) ([]events.Batch, error) {
	m, err := l.s.GetMsg(l.ctx, seq)
	if err != nil {
		return nil, fmt.Errorf("aggregate log %d: %w", seq, err)
	}
	var bs []events.Batch
	err = events.EachBatch(m.Data, func(b *events.Batch) error {
		bs = append(bs, *b)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("aggregate log %d: %w", seq, err)
	}
	return bs, nil
}

// settingsAt returns the last settings the batch of input in records, nil
// when the log has no batch of it or the batch records none (the fold
// ignored the order).
func (l settingsLog) settingsAt(in uint64) (*events.Settings, error) {
	// The last message whose first batch's input is at most in holds in's
	// batch, if any message does.
	lo, hi, found := l.first, l.last, uint64(0)
	for lo <= hi && hi != 0 {
		mid := lo + (hi-lo)/2
		bs, err := l.batches(mid)
		if err != nil {
			return nil, err
		}
		if len(bs) > 0 && bs[0].In <= in {
			found, lo = mid, mid+1
		} else {
			hi = mid - 1
		}
	}
	if found == 0 {
		return nil, nil
	}
	bs, err := l.batches(found)
	if err != nil {
		return nil, err
	}
	var cfg *events.Settings
	for _, b := range bs {
		if b.In != in {
			continue
		}
		for _, d := range b.Decisions {
			if d.Type == events.DecLogSettings {
				cfg = d.Settings
			}
		}
	}
	return cfg, nil
}

// policy is the settings the log is folded under now, for the API.
func (n *Node) policy(ctx context.Context) (events.Settings, error) {
	logged, err := aggregator.LogSettings(ctx, n.JS)
	if err != nil || logged == nil {
		return n.cfg.Fold, err
	}
	return CurrentSettings(ctx, n.JS, n.cfg.Subjects, *logged)
}
