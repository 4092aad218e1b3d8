package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/client"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/wire"
)

// ferry status with several CIDs, or a file of them, prints one JSON line
// per CID from the batch call, each the same view `ferry status CID`
// prints, and fails once all are printed if one was not found.
func TestStatusOfManyCIDs(t *testing.T) {
	s := serve(t, t.TempDir(), "--piece-workers", "-1")
	ctx := context.Background()
	var evs []*events.CarReplicated
	var cids []string
	for i := range 3 {
		ev := testutil.Replicated(8100+i, 3000, true)
		evs = append(evs, ev)
		cids = append(cids, ev.Car)
	}
	if _, err := client.NewHTTP(s.http).Submit(ctx, evs); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the CARs to be known", func() bool {
		_, _, err := run(t, "status", "--server", s.http, cids[2])
		return err == nil
	})
	single := func(cid string) *wire.CarView {
		var v wire.CarView
		if err := json.Unmarshal([]byte(mustRun(t, "status", "--server", s.http, cid)), &v); err != nil {
			t.Fatal(err)
		}
		return &v
	}
	check := func(what, out string, want []string) {
		t.Helper()
		var lines []wire.CarStatus
		sc := bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			var a wire.CarStatus
			if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
				t.Fatalf("%s: line %q: %v", what, sc.Text(), err)
			}
			lines = append(lines, a)
		}
		if len(lines) != len(want) {
			t.Fatalf("%s: %d lines for %d CIDs:\n%s", what, len(lines), len(want), out)
		}
		for i, a := range lines {
			if a.CID != want[i] || a.Status != 200 || !reflect.DeepEqual(a.View, single(want[i])) {
				t.Fatalf("%s: line %d %+v, want the status of %s", what, i, a, want[i])
			}
		}
	}

	check("arguments", mustRun(t, append([]string{"status", "--server", s.http}, cids...)...), cids)

	file := filepath.Join(t.TempDir(), "cids")
	os.WriteFile(file, []byte("# mine\n"+cids[1]+"\n\n  "+cids[0]+"\n"), 0o644)
	check("--file", mustRun(t, "status", "--server", s.http, "--file", file), []string{cids[1], cids[0]})

	var out, errOut bytes.Buffer
	err := Run(ctx, []string{"status", "--server", s.http, "--file", "-"}, strings.NewReader(strings.Join(cids, "\n")), &out, &errOut)
	if err != nil {
		t.Fatalf("--file -: %v %s", err, errOut.String())
	}
	check("--file -", out.String(), cids)

	unknown := testutil.CarCID(818181).String()
	stdout, _, err := run(t, "status", "--server", s.http, cids[0], unknown)
	if err == nil || !strings.Contains(err.Error(), "1 of 2 CIDs") {
		t.Fatalf("status with an unknown CID: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	var last wire.CarStatus
	if len(lines) != 2 || json.Unmarshal([]byte(lines[1]), &last) != nil || last.CID != unknown || last.Status != 404 {
		t.Fatalf("status with an unknown CID printed %q", stdout)
	}
}
