package main

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/whatif"
	"github.com/nats-io/nats.go/jetstream"
)

// ferry whatif against a running ferry serve (its NATS, read only): the
// recorded policy gives the aggregates the API lists, a smaller deal
// gives more, the HTML report stands alone, progress lines count the
// inputs, and the log is left as it was.
func TestWhatifReportsTheRecordedAndAnotherPolicy(t *testing.T) {
	const total = 200
	data := t.TempDir()
	s := serve(t, data, "--tick", "100ms", "--max-wait", "300ms", "--min-payload", "1", "--piece-workers", "-1")
	publishRejecting(t, "--server", s.http, "--file", writeEvents(t, total))
	var rows []aggRow
	testutil.Eventually(t, 60*time.Second, "every CAR in a closed aggregate", func() bool {
		rows = aggregateTable(t, s.http)
		n := 0
		for _, r := range rows {
			if r.state == "INGESTING" {
				return false
			}
			n += r.cars
		}
		return n == total
	})
	js := s.admin(t)
	inputsBefore, aggBefore := untimed(t, js), testutil.Msgs(t, js, "FERRY_AGG")

	html := filepath.Join(t.TempDir(), "whatif.html")
	out, errOut, err := run(t, "whatif", "--nats", s.nats, "--data", data, "--policy", "deal=1MiB,maxwait=1h",
		"--json", "--html", html, "--progress", "always")
	if err != nil {
		t.Fatalf("whatif: %v\n%s%s", err, out, errOut)
	}
	var rep whatif.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("whatif --json: %v\n%s", err, out)
	}
	if len(rep.Policies) != 2 || rep.Policies[0].Name != "recorded" || rep.Policies[1].Settings.DealSize != 1<<20 {
		t.Fatalf("policies %+v", rep.Policies)
	}
	rec := rep.Policies[0]
	if len(rec.Aggregates) != len(rows) {
		t.Fatalf("recorded policy: %d aggregates; ferry aggregates lists %d", len(rec.Aggregates), len(rows))
	}
	byID := map[uint64]aggRow{}
	for _, r := range rows {
		byID[r.id] = r
	}
	for _, a := range rec.Aggregates {
		view := aggregateOf(t, s.http, a.ID)
		if r, ok := byID[a.ID]; !ok || r.cars != a.Count || view.Payload != a.Payload || view.Piece != a.Piece {
			t.Errorf("aggregate %d: whatif %d CARs, %d bytes, %s; the API: %+v, %d bytes, %s", a.ID, a.Count, a.Payload, a.Piece, r, view.Payload, view.Piece)
		}
	}
	if small := rep.Policies[1]; small.Deals <= rec.Deals {
		t.Errorf("1MiB deals: %d aggregates of %d bytes; recorded 8MiB: %d of %d", small.Deals, small.Bytes.Payload, rec.Deals, rec.Bytes.Payload)
	}
	lines := regexp.MustCompile(`(?m)^whatif: (\d+) inputs, 2 policies, \d+/s, \d`).FindAllStringSubmatch(errOut, -1)
	if lines == nil || lines[len(lines)-1][1] != strconv.Itoa(rep.Inputs) {
		t.Errorf("progress lines %q: want them ending at the %d inputs", errOut, rep.Inputs)
	}
	page, err := os.ReadFile(html)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(page, []byte("<svg")) || bytes.Contains(page, []byte("<script")) || !bytes.Contains(page, []byte("deal=1MiB,maxwait=1h")) {
		t.Errorf("HTML report:\n%s", page)
	}
	if got, agg := untimed(t, js), testutil.Msgs(t, js, "FERRY_AGG"); !maps.Equal(got, inputsBefore) || agg != aggBefore {
		t.Errorf("during whatif the input log went from %v to %v, the aggregate log from %d to %d messages", inputsBefore, got, aggBefore, agg)
	}

	// The table for a terminal, and usage errors.
	text := mustRun(t, "whatif", "--nats", s.nats, "--data", data, "--policy", "deal=1MiB", "--policy", "groupby=source.space")
	if !strings.Contains(text, "recorded") || !strings.Contains(text, "deal=1MiB") ||
		!strings.Contains(text, "groups of groupby=source.space: 0 groups") || !strings.Contains(text, "(shared pool)") {
		t.Errorf("whatif table:\n%s", text)
	}
	for _, bad := range []string{"deal=3MiB", "speed=1", "min=9MiB", "maxwait", "groupby=space", "groupmaxwait=-1h"} {
		if _, _, err := run(t, "whatif", "--nats", s.nats, "--data", data, "--policy", bad); err == nil || !strings.Contains(err.Error(), "--policy") {
			t.Errorf("--policy %s: err %v, want a usage error naming it", bad, err)
		}
	}

	// Without --nats it starts its own server on the data dir, which it
	// refuses while serve runs there; once serve stops (and its ticks
	// with it) two runs give the same report, byte for byte.
	if _, _, err := run(t, "whatif", "--data", data); err == nil || !strings.Contains(err.Error(), "ferry serve running") {
		t.Errorf("whatif on a served data dir: %v, want a refusal", err)
	}
	if err := s.stop(t); err != nil {
		t.Fatal(err)
	}
	args := []string{"whatif", "--data", data, "--policy", "deal=1MiB,maxwait=1h", "--json"}
	if first, again := mustRun(t, args...), mustRun(t, args...); again != first || !strings.Contains(first, `"recorded"`) {
		t.Errorf("whatif over the same log gave another report:\n%s\nthen\n%s", first, again)
	}
}

func TestPolicySpecsKeepTheRecordedSettingsTheyLeaveOut(t *testing.T) {
	rec := events.Settings{DealSize: 32 << 30, MinPayload: 20 << 30, MaxWait: 4 * time.Hour, VerifyPieces: true}
	tests := []struct {
		spec string
		want events.Settings
	}{
		{"maxwait=1h", events.Settings{DealSize: 32 << 30, MinPayload: 20 << 30, MaxWait: time.Hour, VerifyPieces: true}},
		{"deal=8GiB", events.Settings{DealSize: 8 << 30, MinPayload: aggregator.DefaultMinPayload(8 << 30), MaxWait: 4 * time.Hour, VerifyPieces: true}},
		{"deal=8GiB, min=1GiB,maxwait=30m", events.Settings{DealSize: 8 << 30, MinPayload: 1 << 30, MaxWait: 30 * time.Minute, VerifyPieces: true}},
		// groupby without groupmaxwait takes ferry serve's default.
		{"groupby=source.space", events.Settings{DealSize: 32 << 30, MinPayload: 20 << 30, MaxWait: 4 * time.Hour, VerifyPieces: true,
			GroupBy: "source.space", GroupMaxWait: 24 * time.Hour}},
		{"groupby=source.account,groupmaxwait=2h", events.Settings{DealSize: 32 << 30, MinPayload: 20 << 30, MaxWait: 4 * time.Hour, VerifyPieces: true,
			GroupBy: "source.account", GroupMaxWait: 2 * time.Hour}},
	}
	for _, tt := range tests {
		p, err := parsePolicy(tt.spec, rec)
		if err != nil || p.Fold != tt.want || p.Name != tt.spec || !p.HoldSettings {
			t.Errorf("%q: %+v, %v; want %+v", tt.spec, p, err, tt.want)
		}
	}
	// Over a grouped log, groupby=none ends grouping (and its wait);
	// another key keeps the recorded grouping.
	grouped := rec
	grouped.GroupBy, grouped.GroupMaxWait = "source.space", 6*time.Hour
	if p, err := parsePolicy("groupby=none", grouped); err != nil || p.Fold != rec {
		t.Errorf("groupby=none over %+v: %+v, %v; want %+v", grouped, p.Fold, err, rec)
	}
	if p, err := parsePolicy("maxwait=1h", grouped); err != nil || p.Fold.GroupBy != "source.space" || p.Fold.GroupMaxWait != 6*time.Hour {
		t.Errorf("maxwait=1h over %+v: %+v, %v", grouped, p.Fold, err)
	}
}

// untimed counts the input log's messages by subject, but for ticks,
// which serve goes on publishing.
func untimed(t *testing.T, js jetstream.JetStream) map[string]uint64 {
	t.Helper()
	st, err := js.Stream(context.Background(), "FERRY_IN")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background(), jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
	delete(info.State.Subjects, "ferry.in.tick")
	return info.State.Subjects
}
