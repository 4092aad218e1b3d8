package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/internal/proctest"
	"github.com/ferry-dev/ferry/internal/testutil"
)

// The CLI's conventions (README "CLI conventions", `ferry help`), each
// checked over the whole command table where it applies to every command.

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// ferryBinary builds ./cmd/ferry once with `go build` in this checkout,
// so the binary carries the VCS stamps (whatever GOFLAGS says), for the tests that need a real
// process (exit statuses, signals).
func ferryBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ferry-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "ferry")
		binErr = proctest.Build(binPath, "./cmd/ferry", "-buildvcs=true")
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// exitStatus runs the binary and returns its exit status and output.
func exitStatus(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(ferryBinary(t), args...)
	cmd.Env = proctest.CleanEnv()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
}

func TestVersionNamesTheRevisionItWasBuiltFrom(t *testing.T) {
	// In process: the test binary's build info, fields present.
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out := mustRun(t, args...)
		for _, field := range []string{"module:   github.com/ferry-dev/ferry", "revision: ", "modified: ", "time:     ", "go:       " + runtime.Version()} {
			if !strings.Contains(out, field) {
				t.Errorf("ferry %s: no %q in\n%s", args[0], field, out)
			}
		}
	}
	// Built from this checkout: the revision is git's HEAD.
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("no git checkout: %v", err)
	}
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(strings.TrimSpace(string(top)), ".git")); err != nil || !st.IsDir() {
		// cmd/go looks for a .git directory; a worktree's .git is a file.
		t.Skip("go build stamps VCS information only where .git is a directory, not in a git worktree")
	}
	for _, arg := range []string{"version", "--version"} {
		code, out, errOut := exitStatus(t, arg)
		if code != 0 {
			t.Fatalf("ferry %s: exit %d %s", arg, code, errOut)
		}
		m := regexp.MustCompile(`(?m)^  revision: (\S+)$`).FindStringSubmatch(out)
		if m == nil || m[1] != strings.TrimSpace(string(head)) {
			t.Errorf("ferry %s built at %s says\n%s", arg, head, out)
		}
		if !regexp.MustCompile(`(?m)^  time:     \d{4}-\d\d-\d\dT`).MatchString(out) || !regexp.MustCompile(`(?m)^  modified: (true|false)$`).MatchString(out) {
			t.Errorf("ferry %s: no commit time or modified flag:\n%s", arg, out)
		}
	}
}

// TestHelpListsEveryWordRunDispatches reads Run's switch: a case there
// (help, --version) is a command `ferry help` must name too.
func TestHelpListsEveryWordRunDispatches(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "main.go", nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	var words []string
	ast.Inspect(f, func(n ast.Node) bool {
		if fn, ok := n.(*ast.FuncDecl); ok && fn.Name.Name != "Run" {
			return false
		}
		if cc, ok := n.(*ast.CaseClause); ok {
			for _, e := range cc.List {
				if lit, ok := e.(*ast.BasicLit); ok {
					s, _ := strconv.Unquote(lit.Value)
					words = append(words, s)
				}
			}
		}
		return true
	})
	if len(words) < 4 {
		t.Fatalf("found only %q in Run's switch", words)
	}
	help := mustRun(t, "help")
	for _, w := range words {
		if !strings.Contains(help, w) {
			t.Errorf("Run dispatches %q, ferry help does not name it", w)
		}
	}
	for _, c := range commands {
		if !regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(c.name) + `\b`).MatchString(help) {
			t.Errorf("ferry help does not list %s", c.name)
		}
	}
	for _, code := range []string{"0 done", "1 failed", "2 usage", "3 publish", "130"} {
		if !strings.Contains(help, code) {
			t.Errorf("ferry help does not document exit status %q", code)
		}
	}
}

// TestEveryCommandExitsTheSameWay: -h is 0 with the usage on stderr, an
// unknown flag 2 with the error printed once, for every command.
func TestEveryCommandExitsTheSameWay(t *testing.T) {
	for _, c := range commands {
		var out, errOut bytes.Buffer
		err := Run(context.Background(), []string{c.name, "-h"}, strings.NewReader(""), &out, &errOut)
		var printed bytes.Buffer
		if code := report(err, nil, &printed); code != 0 || printed.Len() != 0 {
			t.Errorf("ferry %s -h: exit %d, printed %q (%v)", c.name, code, printed.String(), err)
		}
		if out.Len() != 0 || !strings.HasPrefix(errOut.String(), "Usage: ferry "+c.name) {
			t.Errorf("ferry %s -h: stdout %q, stderr %q: want the usage on stderr", c.name, out.String(), errOut.String())
		}
		if strings.Contains(errOut.String(), "  -token") && strings.Contains(errOut.String(), "  -write-token") {
			t.Errorf("ferry %s -h shows the old name --write-token", c.name)
		}

		out.Reset()
		errOut.Reset()
		printed.Reset()
		err = Run(context.Background(), []string{c.name, "--no-such-flag"}, strings.NewReader(""), &out, &errOut)
		if code := report(err, nil, &printed); code != 2 {
			t.Errorf("ferry %s --no-such-flag: exit %d (%v)", c.name, code, err)
		}
		all := errOut.String() + printed.String()
		if n := strings.Count(all, "no-such-flag"); n != 1 || !strings.HasPrefix(printed.String(), "ferry: usage: ") ||
			!strings.HasPrefix(errOut.String(), "Usage: ferry "+c.name) {
			t.Errorf("ferry %s --no-such-flag: the error %d times; stderr %q, then %q", c.name, n, errOut.String(), printed.String())
		}
	}
	// The real process, for the statuses the shell sees: help, usage,
	// failure (nothing listens on port 1).
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"help"}, 0},
		{[]string{"status", "-h"}, 0},
		{[]string{"serve", "--help"}, 0},
		{[]string{"status", "--bogus"}, 2},
		{[]string{"pack", "dir", "--bogus"}, 2},
		{[]string{"sail"}, 2},
		{[]string{}, 2},
		{[]string{"status", "--server", "127.0.0.1:1", "bafy"}, 1},
	} {
		code, _, errOut := exitStatus(t, tc.args...)
		if code != tc.code {
			t.Errorf("ferry %q: exit %d, want %d\n%s", tc.args, code, tc.code, errOut)
		}
		if code != 0 && len(regexp.MustCompile(`(?m)^ferry: `).FindAllString(errOut, -1)) != 1 {
			t.Errorf("ferry %q: stderr has not one \"ferry: \" error: %q", tc.args, errOut)
		}
	}
}

// TestClientCommandsFindServeTheSameWay: one --server (FERRY_SERVER) and
// one --token (FERRY_TOKEN) on every client command, the same default and
// meaning; against a real serve whose reads and writes need the token;
// and an error answer (409) is printed once with one prefix.
func TestClientCommandsFindServeTheSameWay(t *testing.T) {
	var clients []string
	for _, c := range commands {
		var errOut bytes.Buffer
		Run(context.Background(), []string{c.name, "-h"}, strings.NewReader(""), io.Discard, &errOut)
		usage := errOut.String()
		if !strings.Contains(usage, "  -server URL\n") {
			continue
		}
		clients = append(clients, c.name)
		if !strings.Contains(usage, "ferry serve's HTTP API, host:port or URL") || !strings.Contains(usage, "  -token token\n") {
			t.Errorf("ferry %s: --server or --token unlike the others:\n%s", c.name, usage)
		}
	}
	for _, want := range []string{"status", "aggregates", "pin", "pins", "publish", "audit", "pack"} {
		if !strings.Contains(" "+strings.Join(clients, " ")+" ", " "+want+" ") {
			t.Errorf("ferry %s has no --server; client commands: %q", want, clients)
		}
	}

	const tok = "s3cret"
	s := serve(t, t.TempDir(), "--tick", "1h", "--piece-workers", "-1", "--read-token", tok, "--write-token", tok)
	t.Setenv("FERRY_SERVER", "http://"+s.http+"/")
	if _, _, err := run(t, "aggregates"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("aggregates without a token: %v, want 401", err)
	}
	t.Setenv("FERRY_TOKEN", tok)
	lines := eventLines(t, 0, 1)
	if out, errOut, err := run(t, "publish", "--file", lines); err != nil {
		t.Fatalf("publish with FERRY_SERVER and FERRY_TOKEN: %v\n%s%s", err, out, errOut)
	}
	car := testutil.Replicated(0, carSize(0), true).Car
	testutil.Eventually(t, 10*time.Second, "the CAR in the read models", func() bool {
		_, _, err := run(t, "status", car)
		return err == nil
	})
	mustRun(t, "aggregates", "1")
	// The old flag name still sets the token.
	t.Setenv("FERRY_TOKEN", "")
	mustRun(t, "pins", "--write-token", tok)
	mustRun(t, "status", "--token", tok, "--server", s.http, car)

	// Aggregate 1 is INGESTING: reoffer is refused with 409.
	_, _, err := run(t, "aggregates", "--token", tok, "reoffer", "1")
	var printed bytes.Buffer
	if code := report(err, nil, &printed); code != 1 {
		t.Errorf("refused reoffer: exit %d", code)
	}
	if got := printed.String(); !regexp.MustCompile(`^ferry: 409 Conflict: aggregate 1 is INGESTING, not \S+`).MatchString(got) || strings.Count(got, "ferry") != 1 {
		t.Errorf("refused reoffer printed %q, want one \"ferry: 409 Conflict: …\"", got)
	}
}

func TestNATSURLIsHonouredWhereNATSIsNotGiven(t *testing.T) {
	s := serve(t, t.TempDir(), "--tick", "1h", "--piece-workers", "-1")
	t.Setenv("NATS_URL", s.nats)
	if out, errOut, err := run(t, "receipts", "--data", s.data); err != nil {
		t.Fatalf("receipts with NATS_URL: %v\n%s%s", err, out, errOut)
	}
	t.Setenv("NATS_URL", "nats://127.0.0.1:1")
	if _, _, err := run(t, "receipts", "--data", s.data); err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("receipts with NATS_URL at port 1: %v, want a failure to reach it", err)
	}
	// --nats wins over NATS_URL.
	mustRun(t, "receipts", "--data", s.data, "--nats", s.nats)
	// serve's --nats is a choice (empty: embedded): NATS_URL at port 1
	// does not move it.
	serve(t, t.TempDir(), "--tick", "1h", "--piece-workers", "-1")
}

func TestABusyPortIsReportedAsSuch(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().String()
	for _, flagName := range []string{"--nats-listen", "--http"} {
		args := []string{"serve", "--data", t.TempDir(), "--http", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--deal-size", "8MiB", flagName, busy}
		_, _, err := run(t, args...)
		if err == nil || !strings.Contains(err.Error(), busy) || !strings.Contains(err.Error(), "in use") {
			t.Errorf("serve %s %s (busy): %v, want an error naming it and \"in use\"", flagName, busy, err)
		}
	}
}

func TestLogFormatJSON(t *testing.T) {
	for _, c := range []string{"serve", "piece-worker", "fetch-worker", "pack-worker", "spade-sim", "pack"} {
		var errOut bytes.Buffer
		Run(context.Background(), []string{c, "-h"}, strings.NewReader(""), io.Discard, &errOut)
		if !strings.Contains(errOut.String(), "-log-format") {
			t.Errorf("ferry %s has no --log-format", c)
		}
	}
	if _, _, err := run(t, "spade-sim", "--log-format", "xml"); !errors.Is(err, errUsage) {
		t.Errorf("--log-format xml: %v, want a usage error", err)
	}
	s := serve(t, t.TempDir(), "--tick", "1h", "--piece-workers", "-1", "--log-format", "json")
	s.stop(t)
	// serve warns that writes are open (no --write-token) and logs its
	// shutdown: every line is a JSON object with slog's keys.
	lines := strings.Split(strings.TrimSpace(s.stderr.String()), "\n")
	if len(lines) < 2 {
		t.Fatalf("serve logged %q", s.stderr.String())
	}
	var msgs []string
	for _, l := range lines {
		var rec struct {
			Time  time.Time `json:"time"`
			Level string    `json:"level"`
			Msg   string    `json:"msg"`
		}
		if err := json.Unmarshal([]byte(l), &rec); err != nil || rec.Time.IsZero() || rec.Level == "" {
			t.Fatalf("log line %q is not slog JSON: %v", l, err)
		}
		msgs = append(msgs, rec.Msg)
	}
	if !strings.Contains(strings.Join(msgs, "\n"), "shutting down") {
		t.Errorf("log messages %q", msgs)
	}
}

func TestProgressLines(t *testing.T) {
	defer func(d time.Duration) { progressEvery = d }(progressEvery)
	progressEvery = time.Millisecond

	// The drawer itself: a line each tick.
	var buf syncBuf
	n := 0
	var mu sync.Mutex
	stop := startProgressLines(&buf, true, func(time.Duration) string { mu.Lock(); defer mu.Unlock(); n++; return "tick " + strconv.Itoa(n) })
	time.Sleep(50 * time.Millisecond)
	stop()
	if got := strings.Count(buf.String(), "tick "); got < 3 {
		t.Errorf("%d progress lines in 50 ms at 1 ms: %q", got, buf.String())
	}
	if stop := startProgressLines(&buf, false, func(time.Duration) string { t.Error("drawn with show off"); return "" }); stop != nil {
		time.Sleep(5 * time.Millisecond)
		stop()
	}

	dir := t.TempDir()
	for i := range 5 {
		testutil.MakeCAR(t, uint64(i), 3000+i*1000).WriteTo(t, dir)
	}
	data := t.TempDir()
	s := serve(t, data, "--tick", "1h", "--piece-workers", "-1")
	_, errOut, err := run(t, "publish", "--server", s.http, "--dir", dir, "--progress", "always")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^publish: hashed 5/5 CAR files, \d+ MiB, \d+/s, \d`).MatchString(errOut) {
		t.Errorf("publish --dir --progress always: stderr %q", errOut)
	}
	if _, errOut, _ := run(t, "publish", "--server", s.http, "--dir", dir); strings.Contains(errOut, "hashed") {
		t.Errorf("publish --dir drew progress on a stderr that is no terminal: %q", errOut)
	}
	// The audit needs the fold to have caught up with the input log.
	testutil.Eventually(t, 10*time.Second, "5 CARs aggregated", func() bool {
		rows := aggregateTable(t, s.http)
		return len(rows) == 1 && rows[0].cars == 5
	})
	out, errOut, err := run(t, "audit", "--nats", s.nats, "--data", data, "--progress", "always")
	if err != nil {
		t.Fatalf("audit: %v\n%s%s", err, out, errOut)
	}
	m := regexp.MustCompile(`(?m)^audit: (\d+) log entries read, \d+/s, \d`).FindAllStringSubmatch(errOut, -1)
	if m == nil {
		t.Fatalf("audit --progress always: stderr %q", errOut)
	}
	if last, _ := strconv.Atoi(m[len(m)-1][1]); last < 5 {
		t.Errorf("audit's last progress line counts %d entries; 5 CARs were published", last)
	}
	if err := s.stop(t); err != nil {
		t.Fatal(err)
	}
	out, errOut, err = run(t, "replay", "--data", data, "--progress", "always")
	if err != nil {
		t.Fatalf("replay: %v\n%s%s", err, out, errOut)
	}
	total := regexp.MustCompile(`replayed (\d+) batches`).FindStringSubmatch(out)
	lines := regexp.MustCompile(`(?m)^replay: (\d+) batches, \d+/s, \d`).FindAllStringSubmatch(errOut, -1)
	if total == nil || lines == nil || lines[len(lines)-1][1] != total[1] {
		t.Errorf("replay --progress always: stdout %q, stderr %q: want progress lines ending at the total", out, errOut)
	}
}

// sigint starts the binary with args, waits for ready on stdout, sends
// SIGINT and checks it exits within a second with 130 and a summary
// matching summary on stdout or stderr. A nil ready waits a second.
func sigint(t *testing.T, ready, summary *regexp.Regexp, stdin *os.File, args ...string) {
	t.Helper()
	stopWith(t, syscall.SIGINT, 130, ready, summary, stdin, args...)
}

// stopWith starts ferry with args, waits for ready on its output, sends
// sig and wants it to exit within a second with status code, having
// printed summary.
func stopWith(t *testing.T, sig syscall.Signal, code int, ready, summary *regexp.Regexp, stdin *os.File, args ...string) {
	t.Helper()
	cmd := exec.Command(ferryBinary(t), args...)
	cmd.Env = proctest.CleanEnv()
	if stdin != nil {
		cmd.Stdin = stdin
	}
	out, errOut := &syncBuf{}, &syncBuf{}
	cmd.Stdout, cmd.Stderr = out, errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	defer func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
			<-done
		}
	}()
	if ready == nil {
		// Nothing to wait for on its output: a second to be at work.
		time.Sleep(time.Second)
	} else {
		testutil.Eventually(t, 30*time.Second, "ferry "+args[0]+" ready", func() bool {
			return ready.MatchString(out.String() + errOut.String())
		})
	}
	select {
	case <-done:
		t.Fatalf("ferry %s ended before SIGINT: %v\n%s%s", args[0], cmd.ProcessState, out, errOut)
	default:
	}
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("ferry %s still running 10 s after SIGINT\n%s%s", args[0], out, errOut)
	}
	took := time.Since(sent)
	t.Logf("ferry %s exited %v after %v", args[0], took, sig)
	if took > time.Second {
		t.Errorf("ferry %s took %v to stop after %v, want under 1 s", args[0], took, sig)
	}
	if got := cmd.ProcessState.ExitCode(); got != code {
		t.Errorf("ferry %s exited %d after %v, want %d\n%s%s", args[0], got, sig, code, out, errOut)
	}
	if !summary.MatchString(out.String() + errOut.String()) {
		t.Errorf("ferry %s printed no summary matching %s:\nstdout %q\nstderr %q", args[0], summary, out, errOut)
	}
}

func TestCtrlCStopsLongCommandsWithinASecond(t *testing.T) {
	ferryBinary(t)
	s := serve(t, t.TempDir(), "--tick", "1h", "--piece-workers", "-1")
	t.Run("serve", func(t *testing.T) {
		sigint(t, regexp.MustCompile(`ferry serving`), regexp.MustCompile(`serve: its logs and read models are in .*\nserve: stopped after \d`), nil,
			"serve", "--data", t.TempDir(), "--http", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--deal-size", "8MiB")
	})
	t.Run("serve by SIGTERM", func(t *testing.T) {
		// A service manager's stop: a clean stop is a success.
		stopWith(t, syscall.SIGTERM, 0, regexp.MustCompile(`ferry serving`), regexp.MustCompile(`serve: stopped after \d`), nil,
			"serve", "--data", t.TempDir(), "--http", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--deal-size", "8MiB")
	})
	t.Run("receipts --follow", func(t *testing.T) {
		sigint(t, nil, regexp.MustCompile(`receipts: stopped after printing 0 receipts`), nil,
			"receipts", "--follow", "--nats", s.nats, "--data", s.data)
	})
	t.Run("spade-sim", func(t *testing.T) {
		sigint(t, regexp.MustCompile(`spade-sim listening`), regexp.MustCompile(`spade-sim: stopped after \d`), nil,
			"spade-sim", "--listen", "127.0.0.1:0")
	})
	for _, w := range []string{"piece-worker", "pack-worker"} {
		t.Run(w, func(t *testing.T) {
			sigint(t, regexp.MustCompile(w+`: \d+ (workers|jobs)`), regexp.MustCompile(w+`: stopped after \d`), nil,
				w, "--nats", s.nats, "--data", s.data)
		})
	}
	t.Run("fetch-worker", func(t *testing.T) {
		sigint(t, regexp.MustCompile(`fetch-worker: \d+ workers`), regexp.MustCompile(`fetch-worker: stopped after \d`), nil,
			"fetch-worker", "--nats", s.nats, "--data", s.data, "--car-store", t.TempDir(), "--public-url", "http://127.0.0.1:1/cars")
	})
	t.Run("pack", func(t *testing.T) {
		// A sparse file big enough to take seconds to hash and commP.
		dir := t.TempDir()
		f, err := os.Create(filepath.Join(dir, "big"))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(2 << 30); err != nil {
			t.Fatal(err)
		}
		f.Close()
		sigint(t, regexp.MustCompile(`pack: \d+/\d+ files`), regexp.MustCompile(`pack stopped after 0 of \d+ CARs \(.* read\) in .*; run the same command again`), nil,
			"pack", dir, "--out", t.TempDir(), "--progress", "always")
	})
	t.Run("publish of many", func(t *testing.T) {
		// An *os.File, so that the child reads the pipe itself and Wait
		// does not wait on a copy.
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer w.Close()
		go func() {
			for i := 2_000_000; ; i++ {
				if _, err := w.Write(append(testutil.MustEncode(testutil.Replicated(i, carSize(i), true)), '\n')); err != nil {
					return
				}
			}
		}()
		sigint(t, nil, regexp.MustCompile(`(?m)^published \d+ events in \S+ \(\d+/s\): accepted \d+, .*not acknowledged \d+$`), r,
			"publish", "--server", s.http, "-")
	})
}
