package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/wire"
)

// runSettings prints the settings the log is folded under, or with set
// orders a change of its aggregation policy from the next input on.
func runSettings(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("settings", "settings [set [--min-payload SIZE] [--max-wait D] [--group-by FIELD|none] [--group-max-wait D]]", stderr)
	api := serverFlags(fs, defaultHTTP, "")
	minPayload := size(0)
	fs.Var(&minPayload, "min-payload", "set: CAR bytes an aggregate needs before max-wait closes it")
	maxWait := fs.Duration("max-wait", 0, "set: how long the oldest CAR may wait once the aggregate has min-payload")
	groupBy := fs.String("group-by", "", "set: fill an aggregate per group: a `path` into car.replicated's source (source.space), or none")
	groupMaxWait := fs.Duration("group-max-wait", 0, "set: how long a group's aggregate may stay under min-payload before its CARs go to the shared pool (0: never; with a first --group-by: 24h when not given)")
	by := fs.String("by", "", "set: who asks, recorded with the change (default: the HTTP server names the time)")
	asJSON := fs.Bool("json", false, "print the settings as GET /v1/settings gives them (durations in nanoseconds)")
	ops, err := parseMixed(fs, args)
	if err != nil {
		return err
	}
	c := api.client()
	switch {
	case len(ops) == 0:
		if given := setFlags(fs); len(given) > 0 {
			return fmt.Errorf("%w: --%s changes settings only with 'ferry settings set'", errUsage, strings.Join(given, ", --"))
		}
		v, err := c.Settings(ctx)
		if err != nil {
			return err
		}
		var cfg events.Settings
		if err := json.Unmarshal(v, &cfg); *asJSON || err != nil {
			return printJSON(stdout, v)
		}
		return printSettings(stdout, cfg)
	case len(ops) == 1 && ops[0] == "set":
	default:
		fs.Usage()
		return fmt.Errorf("%w: settings [set …]", errUsage)
	}
	change := wire.SettingsChange{By: *by}
	for _, name := range setFlags(fs) {
		switch name {
		case "min-payload":
			v := uint64(minPayload)
			change.MinPayload = &v
		case "max-wait":
			change.MaxWait = durationOf(*maxWait)
		case "group-by":
			g, err := events.ParseGroupBy(*groupBy)
			if err != nil {
				return fmt.Errorf("%w: --%v", errUsage, err)
			}
			if g == "" {
				g = events.GroupNone // "" would read as left out
			}
			change.GroupBy = &g
		case "group-max-wait":
			change.GroupMaxWait = durationOf(*groupMaxWait)
		}
	}
	if change.MinPayload == nil && change.MaxWait == nil && change.GroupBy == nil && change.GroupMaxWait == nil {
		fs.Usage()
		return fmt.Errorf("%w: settings set: give --min-payload, --max-wait, --group-by or --group-max-wait", errUsage)
	}
	if change.GroupBy != nil && *change.GroupBy != events.GroupNone && change.GroupMaxWait == nil {
		// A log that never grouped has a group max wait of 0, which never
		// releases a group: grouping starts with serve's default instead,
		// as `ferry serve --group-by` does.
		v, err := c.Settings(ctx)
		if err != nil {
			return err
		}
		var now events.Settings
		if err := json.Unmarshal(v, &now); err != nil {
			return fmt.Errorf("GET /v1/settings: %w", err)
		}
		if now.GroupMaxWait == 0 {
			change.GroupMaxWait = durationOf(serveGroupMaxWait)
		}
	}
	res, err := c.ChangeSettings(ctx, change)
	if err != nil {
		return err
	}
	s := res.Settings
	groups := "none"
	if s.GroupBy != "" {
		groups = fmt.Sprintf("%s (released to the pool after %s)", s.GroupBy, s.GroupMaxWait)
		if s.GroupMaxWait == 0 {
			groups = s.GroupBy + " (never released to the pool: groupMaxWait 0)"
		}
	}
	fmt.Fprintf(stdout, "settings change requested: input %d, by %s\n  from there on: minPayload %d, maxWait %s, groupBy %s\n",
		res.Seq, res.By, s.MinPayload, s.MaxWait, groups)
	return nil
}

// printSettings writes one setting a line, by its JSON name, sizes and
// durations as a person reads them, the policy's marked as what
// 'ferry settings set' changes.
func printSettings(w io.Writer, s events.Settings) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	v := reflect.ValueOf(s)
	for i := range v.NumField() {
		f := v.Type().Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		var text string
		switch x := v.Field(i).Interface().(type) {
		case time.Duration:
			text = x.String()
		case uint64:
			text = formatSize(x)
			if text != strconv.FormatUint(x, 10) {
				text += fmt.Sprintf(" (%d bytes)", x)
			}
		case string:
			text = cmp.Or(x, events.GroupNone)
		default:
			text = fmt.Sprint(x)
		}
		kind := "fixed for the log"
		if slices.Contains(events.PolicyNames, name) {
			kind = "policy: ferry settings set"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", name, text, kind)
	}
	return tw.Flush()
}

// setFlags names the policy flags given on the command line (or in the
// environment), in the order of the flag set.
func setFlags(fs *flag.FlagSet) []string {
	var given []string
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "min-payload", "max-wait", "group-by", "group-max-wait":
			given = append(given, f.Name)
		}
	})
	return given
}

func durationOf(d time.Duration) *wire.Duration {
	v := wire.Duration(d)
	return &v
}
