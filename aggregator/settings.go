package aggregator

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/ferry-dev/ferry/events"

	"github.com/ferry-dev/ferry/jetlog"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrSettings is returned when the settings asked for disagree with those
// the aggregate log was made under.
var ErrSettings = errors.New("settings disagree with the aggregate log's")

// LogSettings reads the settings the aggregate log records (the
// log.settings decision the fold puts first in its first batch). It
// returns nil when the log is empty, or was made before settings were
// recorded: the fold then records the settings it runs under with its next
// batch.
func LogSettings(ctx context.Context, js jetstream.JetStream) (*events.Settings, error) {
	st, err := js.Stream(ctx, jetlog.StreamAgg)
	if err != nil {
		return nil, fmt.Errorf("aggregate log: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("aggregate log: %w", err)
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	m, err := st.GetMsg(ctx, info.State.FirstSeq)
	if err != nil {
		return nil, fmt.Errorf("aggregate log %d: %w", info.State.FirstSeq, err)
	}
	var cfg *events.Settings
	err = events.EachBatch(m.Data, func(b *events.Batch) error {
		if cfg == nil && len(b.Decisions) > 0 && b.Decisions[0].Type == events.DecLogSettings {
			cfg = b.Decisions[0].Settings
		}
		return errStop
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, fmt.Errorf("aggregate log %d: %w", info.State.FirstSeq, err)
	}
	return cfg, nil
}

var errStop = errors.New("stop")

// Reconcile returns the settings to run under: the log's when it has
// them, want's otherwise. given names the settings (by their JSON names)
// the operator chose explicitly; one of them that disagrees with the log's
// is ErrSettings, with every disagreement spelled out, so that a mistyped
// flag never folds a log under settings it was not made with.
func Reconcile(log *events.Settings, want events.Settings, given map[string]bool) (events.Settings, error) {
	if log == nil {
		return want, nil
	}
	if diffs := Disagreements(want, *log, given, "the log's"); len(diffs) > 0 {
		return *log, fmt.Errorf("%w: %s; the log was made under %s: leave those flags out (or set them to the log's values)",
			ErrSettings, strings.Join(diffs, ", "), log)
	}
	return *log, nil
}

// Disagreements spells out, as "name want (whose: have)", each setting
// named in given (by its JSON name) on which want and have differ.
func Disagreements(want, have events.Settings, given map[string]bool, whose string) []string {
	var diffs []string
	w, h := reflect.ValueOf(want), reflect.ValueOf(have)
	for i := range w.NumField() {
		name, _, _ := strings.Cut(w.Type().Field(i).Tag.Get("json"), ",")
		if given[name] && !w.Field(i).Equal(h.Field(i)) {
			diffs = append(diffs, fmt.Sprintf("%s %v (%s: %v)", name, w.Field(i), whose, h.Field(i)))
		}
	}
	return diffs
}
