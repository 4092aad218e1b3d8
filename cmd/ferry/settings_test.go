package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/client"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/node"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
)

// ferry settings set changes a live log's policy, which the aggregate log
// records; a restart with the policy the log began with is refused, one
// with the policy it has now is not.
func TestSettingsSetChangesTheLivePolicyAndServeHoldsFlagsToIt(t *testing.T) {
	data := t.TempDir()
	s := serve(t, data, "--group-by", "source.space", "--group-max-wait", "1h", "--write-token", "w", "--piece-workers", "-1")
	js := s.admin(t)
	ctx := context.Background()

	for _, args := range [][]string{
		{"settings", "--server", s.http, "--token", "w", "set"},
		{"settings", "--server", s.http, "--token", "w", "set", "--group-by", "space"},
		{"settings", "--server", s.http, "--token", "w", "--max-wait", "2h"},
		{"settings", "--server", s.http, "--token", "w", "sit", "--max-wait", "2h"},
	} {
		if out, _, err := run(t, args...); !errors.Is(err, errUsage) {
			t.Errorf("ferry %s: %v, want a usage error\n%s", strings.Join(args, " "), err, out)
		}
	}
	if _, _, err := run(t, "settings", "--server", s.http, "set", "--max-wait", "2h"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("settings set without the write token: %v", err)
	}
	// Already so: refused by the server, naming the settings.
	if _, _, err := run(t, "settings", "--server", s.http, "--token", "w", "set", "--group-by", "source.space"); err == nil || !strings.Contains(err.Error(), "already") {
		t.Errorf("settings set to what they are: %v", err)
	}

	out := mustRun(t, "settings", "--server", s.http, "--token", "w", "set", "--max-wait", "2h", "--min-payload", "5MiB", "--by", "ops")
	if !strings.Contains(out, "settings change requested: input 1, by ops via http@") ||
		!strings.Contains(out, "minPayload 5242880, maxWait 2h0m0s, groupBy source.space (released to the pool after 1h0m0s)") {
		t.Fatalf("settings set printed %q", out)
	}
	var first *events.Settings
	var now events.Settings
	testutil.Eventually(t, 30*time.Second, "the fold to record the change", func() bool {
		var err error
		if first, err = aggregator.LogSettings(ctx, js); err != nil || first == nil {
			return false
		}
		now, err = node.CurrentSettings(ctx, js, jetlog.DefaultSubjects, *first)
		return err == nil && now.MaxWait == 2*time.Hour
	})
	if first.MaxWait != 4*time.Hour || first.GroupBy != "source.space" || first.GroupMaxWait != time.Hour ||
		now.MinPayload != 5<<20 || now.GroupBy != "source.space" || now.Fixed() != first.Fixed() {
		t.Fatalf("the log began under %s and is folded under %s", first, now)
	}
	// ferry settings prints GET /v1/settings once the read models have
	// applied the change.
	testutil.Eventually(t, 30*time.Second, "ferry settings to print the change", func() bool {
		out, _, err := run(t, "settings", "--server", s.http, "--token", "w", "--json")
		var got events.Settings
		switch {
		case err != nil:
			t.Logf("ferry settings: %v", err)
			return false
		case json.Unmarshal([]byte(out), &got) != nil:
			t.Fatalf("ferry settings printed %q", out)
		}
		return got == now
	})
	// Without --json: one setting a line, as a person reads it, the
	// policy's marked as what settings set changes.
	out, _, err := run(t, "settings", "--server", s.http, "--token", "w")
	if err != nil {
		t.Fatalf("ferry settings: %v", err)
	}
	{
		for _, want := range []string{"dealSize  8MiB (8388608 bytes)  fixed for the log", "maxWait  2h0m0s  policy: ferry settings set",
			"minPayload  5MiB (5242880 bytes)  policy: ferry settings set", "groupBy  source.space  policy: ferry settings set"} {
			if !strings.Contains(strings.Join(strings.Fields(strings.ReplaceAll(out, "\n", " | ")), " "), strings.Join(strings.Fields(want), " ")) {
				t.Errorf("ferry settings printed\n%s\nwithout the line %q", out, want)
			}
		}
	}
	if err := s.stop(t); err != nil {
		t.Fatalf("serve returned %v\n%s", err, s.stderr)
	}

	// The first max wait, given again: refused, pointing at settings set.
	_, _, err = run(t, "serve", "--data", data, "--http", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0",
		"--deal-size", "8MiB", "--max-wait", "4h")
	if !errors.Is(err, aggregator.ErrSettings) || !strings.Contains(err.Error(), "ferry settings set") ||
		!strings.Contains(err.Error(), "maxWait 4h0m0s (the log's now: 2h0m0s)") {
		t.Fatalf("serve with the log's first max wait: %v", err)
	}
	for _, policy := range [][]string{
		{"--max-wait", "2h", "--group-by", "source.space", "--min-payload", "5MiB"},
		// Without --group-by, a group max wait is still the log's to match.
		{"--group-max-wait", "1h"},
	} {
		s = serve(t, data, append(policy, "--piece-workers", "-1")...)
		if err := s.stop(t); err != nil {
			t.Fatalf("serve %v, the log's current policy, returned %v\n%s", policy, err, s.stderr)
		}
	}
	for _, args := range [][]string{
		{"serve", "--data", t.TempDir(), "--group-by", "space"},
		{"serve", "--data", t.TempDir(), "--group-by", "source.space", "--group-max-wait", "-1h"},
	} {
		if _, _, err := run(t, args...); !errors.Is(err, errUsage) {
			t.Errorf("ferry %s: %v, want a usage error", strings.Join(args, " "), err)
		}
	}
}

// ferry aggregates close without an id closes the shared pool's
// INGESTING aggregate among several; with --group, that group's.
func TestAggregatesCloseFindsThePoolsOrTheGroupsAggregate(t *testing.T) {
	s := serve(t, t.TempDir(), "--group-by", "source.space", "--piece-workers", "-1")
	c := client.NewHTTP(s.http)
	ctx := context.Background()
	var evs []*events.CarReplicated
	for i, space := range []string{"did:key:a", "did:key:b", ""} {
		ev := testutil.MakeCAR(t, uint64(700+i), 3000).Event("https://carpark.example", true)
		if space != "" {
			ev.Source = json.RawMessage(fmt.Sprintf(`{"space":%q}`, space))
		}
		evs = append(evs, ev)
	}
	if _, err := c.Submit(ctx, evs); err != nil {
		t.Fatal(err)
	}
	ids := map[string]uint64{}
	testutil.Eventually(t, 30*time.Second, "three INGESTING aggregates", func() bool {
		live, err := c.Ingesting(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range live {
			ids[a.Group] = a.ID
		}
		return len(live) == 3
	})
	closed := func(id uint64) {
		t.Helper()
		testutil.Eventually(t, 30*time.Second, fmt.Sprintf("aggregate %d READY", id), func() bool {
			v, err := c.Aggregate(ctx, fmt.Sprint(id), -1, 0)
			return err == nil && v.State == aggregator.Ready
		})
	}
	if out := mustRun(t, "aggregates", "--server", s.http, "close"); out != fmt.Sprintf("close of aggregate %d requested\n", ids[""]) {
		t.Fatalf("aggregates close printed %q; the pool's is %d", out, ids[""])
	}
	closed(ids[""])
	// Two groups' left, no pool's: close names them rather than pick one.
	_, _, err := run(t, "aggregates", "--server", s.http, "close")
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf(`%d (group "did:key:a")`, ids["did:key:a"])) ||
		!strings.Contains(err.Error(), fmt.Sprintf(`%d (group "did:key:b")`, ids["did:key:b"])) {
		t.Fatalf("aggregates close with only groups' INGESTING: %v", err)
	}
	if out := mustRun(t, "aggregates", "--server", s.http, "close", "--group", "did:key:b"); out != fmt.Sprintf("close of aggregate %d requested\n", ids["did:key:b"]) {
		t.Fatalf("aggregates close --group did:key:b printed %q; its aggregate is %d", out, ids["did:key:b"])
	}
	closed(ids["did:key:b"])
	// The listing names each aggregate's group, and --group lists one
	// group's.
	rows := func(args ...string) map[uint64]string {
		t.Helper()
		lines := strings.Split(strings.TrimSpace(mustRun(t, append([]string{"aggregates", "--server", s.http}, args...)...)), "\n")
		if h := strings.Fields(lines[0]); h[len(h)-1] != "GROUP" {
			t.Fatalf("aggregates %v: header %q has no GROUP column", args, lines[0])
		}
		got := map[uint64]string{}
		for _, l := range lines[1:] {
			f := strings.Fields(l)
			id, _ := strconv.ParseUint(f[0], 10, 64)
			got[id] = f[len(f)-1]
		}
		return got
	}
	if got, want := rows(), map[uint64]string{ids[""]: "(pool)", ids["did:key:a"]: "did:key:a", ids["did:key:b"]: "did:key:b"}; !maps.Equal(got, want) {
		t.Fatalf("aggregates listed %v, want %v", got, want)
	}
	if got, want := rows("--group", "did:key:b"), map[uint64]string{ids["did:key:b"]: "did:key:b"}; !maps.Equal(got, want) {
		t.Fatalf("aggregates --group did:key:b listed %v, want %v", got, want)
	}
	for _, args := range [][]string{{"close", "--group", "did:key:a", "1"}, {"reoffer", "1", "--group", "did:key:a"}} {
		if _, _, err := run(t, append([]string{"aggregates", "--server", s.http}, args...)...); !errors.Is(err, errUsage) {
			t.Errorf("aggregates %v: %v, want a usage error", args, err)
		}
	}
	if _, _, err := run(t, "aggregates", "--server", s.http, "close", "--group", "did:key:c"); err == nil || !strings.Contains(err.Error(), `no INGESTING aggregate of group "did:key:c"`) {
		t.Fatalf("aggregates close --group of no aggregate: %v", err)
	}
	// One left: close closes it, whatever it fills for.
	if out := mustRun(t, "aggregates", "--server", s.http, "close"); out != fmt.Sprintf("close of aggregate %d requested\n", ids["did:key:a"]) {
		t.Fatalf("aggregates close printed %q; the one left is %d", out, ids["did:key:a"])
	}
	closed(ids["did:key:a"])
}

// A first --group-by on a log that never grouped starts with serve's
// group max wait, not the log's 0 (which would never release a group);
// a later one keeps the log's.
func TestAFirstGroupByTakesServesGroupMaxWait(t *testing.T) {
	s := serve(t, t.TempDir(), "--piece-workers", "-1")
	out := mustRun(t, "settings", "--server", s.http, "set", "--group-by", "source.space")
	if want := fmt.Sprintf("source.space (released to the pool after %s)", serveGroupMaxWait); !strings.Contains(out, want) {
		t.Fatalf("settings set --group-by printed %q, want it to say %q", out, want)
	}
	current := func() events.Settings {
		var got events.Settings
		testutil.Eventually(t, 30*time.Second, "the change in GET /v1/settings", func() bool {
			out, _, err := run(t, "settings", "--server", s.http, "--json")
			got = events.Settings{}
			return err == nil && json.Unmarshal([]byte(out), &got) == nil && got.GroupBy != ""
		})
		return got
	}
	if got := current(); got.GroupBy != "source.space" || got.GroupMaxWait != serveGroupMaxWait {
		t.Fatalf("after a first --group-by the log is folded under %s", got)
	}
	mustRun(t, "settings", "--server", s.http, "set", "--group-max-wait", "2h")
	testutil.Eventually(t, 30*time.Second, "group max wait 2h", func() bool { return current().GroupMaxWait == 2*time.Hour })
	mustRun(t, "settings", "--server", s.http, "set", "--group-by", "source.account")
	testutil.Eventually(t, 30*time.Second, "grouping by account", func() bool { return current().GroupBy == "source.account" })
	if got := current(); got.GroupMaxWait != 2*time.Hour {
		t.Fatalf("a later --group-by changed the group max wait: %s", got)
	}
}
