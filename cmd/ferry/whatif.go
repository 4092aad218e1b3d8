package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/natsembed"
	"github.com/ferry-dev/ferry/internal/node"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/piece"
	"github.com/ferry-dev/ferry/whatif"
	bolt "go.etcd.io/bbolt"
)

func runWhatif(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("whatif", "whatif [--policy 'deal=SIZE,min=SIZE,maxwait=DURATION,groupby=PATH,groupmaxwait=DURATION']... [flags]", stderr)
	data := fs.String("data", "./ferry-data", "ferry's data `dir` (without --nats, stop ferry serve first)")
	natsURL := fs.String("nats", "", "NATS `URL` with ferry's streams (default: start the embedded server on --data)")
	prefix := fs.String("prefix", jetlog.DefaultPrefix, "subject prefix (ferry serve's --prefix)")
	var specs strList
	fs.Var(&specs, "policy", "an alternative `policy` to fold the log under, e.g. 'deal=8GiB,min=4GiB,maxwait=2h' or 'groupby=source.space,groupmaxwait=12h' (repeatable; keys left out keep the recorded settings)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	htmlFile := fs.String("html", "", "also write the report as a self-contained HTML `file`")
	auth := natsAuthFlags(fs, natsembed.RoleFerry)
	progress := progressFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	show, err := progress(stderr)
	if err != nil {
		return err
	}
	if *natsURL == "" {
		// The embedded server must not start on a store ferry serve runs:
		// its read models' lock says whether it does.
		if st, err := os.Stat(*data); err != nil || !st.IsDir() {
			return fmt.Errorf("no ferry data dir at %s", *data)
		}
		if err := notServed(*data); err != nil {
			return err
		}
	}
	js, done, err := dialData(auth, *natsURL, *data, "ferry whatif")
	if err != nil {
		return err
	}
	defer done()
	recorded, err := aggregator.LogSettings(ctx, js)
	if err != nil {
		return err
	}
	if recorded == nil {
		return errors.New("the aggregate log records no settings (ferry serve has folded nothing yet): nothing to compare with")
	}
	policies := []whatif.Policy{{Name: "recorded", Fold: *recorded}}
	for _, spec := range specs {
		p, err := parsePolicy(spec, *recorded)
		if err != nil {
			return err
		}
		policies = append(policies, p)
	}
	f := whatif.New(policies, whatif.Options{})
	var read atomic.Int64
	stop := startProgressLines(stderr, show, func(elapsed time.Duration) string {
		n := read.Load()
		return fmt.Sprintf("whatif: %d inputs, %d policies, %s, %s", n, len(policies), perSecond(n, elapsed), elapsed.Round(time.Second))
	})
	err = whatif.ReadLog(ctx, js, jetlog.Subjects{Prefix: *prefix}, f, &read)
	stop()
	if err != nil {
		return err
	}
	rep := f.Report()
	if *htmlFile != "" {
		if err := writeHTML(*htmlFile, rep); err != nil {
			return err
		}
	}
	if *asJSON {
		return rep.WriteJSON(stdout)
	}
	return rep.WriteText(stdout)
}

// notServed fails when ferry serve holds the data dir: its read models'
// lock is taken, which a shared, read-only lock finds without writing.
func notServed(data string) error {
	path := node.ReadModelPath(data)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return fmt.Errorf("%s is in use (is ferry serve running on this data dir?): give --nats to read its log", path)
	}
	if err == nil {
		db.Close()
	}
	return nil
}

func writeHTML(path string, rep *whatif.Report) error {
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := rep.WriteHTML(out); err != nil {
		out.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	return out.Close()
}

// parsePolicy reads a policy spec, "deal=SIZE,min=SIZE,maxwait=DURATION,
// groupby=PATH,groupmaxwait=DURATION", over the recorded settings: keys
// left out keep them, except that a deal size given without min takes
// that size's default min payload (the recorded one may not fit the new
// deal, or never be reached), and a groupby given without groupmaxwait
// takes ferry serve's default group max wait (none for groupby=none).
// The policy holds its settings for the whole log (whatif.Policy.HoldSettings):
// the log's settings.change inputs are the recorded policy's alone.
func parsePolicy(spec string, recorded events.Settings) (whatif.Policy, error) {
	cfg := recorded
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: --policy %q: %s", errUsage, spec, fmt.Sprintf(format, a...))
	}
	var minGiven, groupByGiven, groupWaitGiven bool
	for kv := range strings.SplitSeq(spec, ",") {
		key, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return whatif.Policy{}, bad("%q is not key=value", kv)
		}
		var err error
		switch key {
		case "deal":
			cfg.DealSize, err = parseSize(val)
			if err == nil && !piece.ValidPadded(cfg.DealSize) {
				err = fmt.Errorf("deal size %s is not a power of two of at least %d bytes", val, piece.MinPaddedSize)
			}
		case "min":
			cfg.MinPayload, err = parseSize(val)
			minGiven = true
		case "maxwait":
			cfg.MaxWait, err = time.ParseDuration(val)
		case "groupby":
			cfg.GroupBy, err = events.ParseGroupBy(val)
			groupByGiven = true
		case "groupmaxwait":
			cfg.GroupMaxWait, err = time.ParseDuration(val)
			if err == nil && cfg.GroupMaxWait < 0 {
				err = fmt.Errorf("groupmaxwait %s is negative", val)
			}
			groupWaitGiven = true
		default:
			return whatif.Policy{}, bad("unknown key %q (want deal, min, maxwait, groupby, groupmaxwait)", key)
		}
		if err != nil {
			return whatif.Policy{}, bad("%v", err)
		}
	}
	if !minGiven && cfg.DealSize != recorded.DealSize {
		cfg.MinPayload = aggregator.DefaultMinPayload(cfg.DealSize)
	}
	if groupByGiven && !groupWaitGiven {
		cfg.GroupMaxWait = 0
		if cfg.GroupBy != "" {
			cfg.GroupMaxWait = serveGroupMaxWait
		}
	}
	if cfg.MinPayload > piece.Unpadded(cfg.DealSize) {
		return whatif.Policy{}, bad("min %d is more than a %s deal holds: max wait would never close an aggregate", cfg.MinPayload, formatSize(cfg.DealSize))
	}
	return whatif.Policy{Name: spec, Fold: cfg, HoldSettings: true}, nil
}
