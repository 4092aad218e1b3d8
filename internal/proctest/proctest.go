// Package proctest runs ferry's binaries as child processes for the test
// tiers that need whole processes (tests/crash, tests/e2e): it builds
// them, starts them with their output in log files, kills whatever still
// runs when a test ends, and fails the test for a panic or a data race in
// any child's log.
//
// Children get the test's environment without FERRY_* variables, which
// would change their flags, and die with the test process however it
// ends (Pdeathsig).
package proctest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ModuleRoot is the directory of go.mod above the working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Build runs go build of pkg (relative to the module root) into out.
func Build(out, pkg string, flags ...string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	args := append(append([]string{"build"}, flags...), "-o", out, pkg)
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// FreePort is a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Proc is one run of a child process. Its output is appended to a log
// file shared by every run under the same name.
type Proc struct {
	Name   string
	Log    string
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // cmd.Wait's, after exited
}

// Procs starts child processes and kills whatever still runs when the
// test ends.
type Procs struct {
	t      testing.TB
	logDir string
	mu     sync.Mutex
	all    []*Proc
}

// New returns the Procs of t, logging into logDir (a temp dir if empty).
func New(t testing.TB, logDir string) *Procs {
	if logDir != "" {
		logDir = filepath.Join(logDir, t.Name())
		if err := os.MkdirAll(logDir, 0o755); err != nil {
			t.Fatal(err)
		}
	} else {
		logDir = t.TempDir()
	}
	ps := &Procs{t: t, logDir: logDir}
	t.Cleanup(func() {
		ps.mu.Lock()
		all := ps.all
		ps.mu.Unlock()
		for _, p := range all {
			p.Kill()
		}
		ps.scanLogs()
		if t.Failed() {
			ps.DumpLogs(40)
		}
	})
	return ps
}

// Start runs bin with args, output to <logDir>/<name>.log. env, when
// given, is added to the children's environment.
func (ps *Procs) Start(name, bin string, args ...string) *Proc {
	return ps.StartEnv(name, nil, bin, args...)
}

// StartEnv is Start with extra environment variables ("K=V").
func (ps *Procs) StartEnv(name string, env []string, bin string, args ...string) *Proc {
	ps.t.Helper()
	logPath := filepath.Join(ps.logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		ps.t.Fatal(err)
	}
	fmt.Fprintf(f, "\n===== %s start %s: %s %s\n", name, time.Now().Format(time.RFC3339Nano), filepath.Base(bin), strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(CleanEnv(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		ps.t.Fatalf("start %s: %v", name, err)
	}
	p := &Proc{Name: name, cmd: cmd, Log: logPath, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		fmt.Fprintf(f, "===== %s exit %s: %v\n", name, time.Now().Format(time.RFC3339Nano), p.err)
		f.Close()
		close(p.exited)
	}()
	ps.mu.Lock()
	ps.all = append(ps.all, p)
	ps.mu.Unlock()
	return p
}

// CleanEnv is the environment without FERRY_* variables.
func CleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FERRY_") {
			env = append(env, kv)
		}
	}
	return env
}

// Running reports whether the process has not exited.
func (p *Proc) Running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Err is how the process ended (nil while it runs).
func (p *Proc) Err() error {
	select {
	case <-p.exited:
		return p.err
	default:
		return nil
	}
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited is closed when the process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Proc) Kill() {
	if p.Running() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
	}
}

// Stop sends SIGTERM and waits up to timeout for a clean exit; then kills.
func (p *Proc) Stop(timeout time.Duration) error {
	if !p.Running() {
		return fmt.Errorf("%s had exited already: %v", p.Name, p.err)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return p.err
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("%s did not exit within %s of SIGTERM", p.Name, timeout)
	}
}

// DumpLogs logs the last lines of every child's log.
func (ps *Procs) DumpLogs(lines int) {
	entries, _ := os.ReadDir(ps.logDir)
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".log") {
			continue
		}
		ps.t.Logf("----- last %d lines of %s (full log: %s)\n%s", lines, e.Name(),
			filepath.Join(ps.logDir, e.Name()), Tail(filepath.Join(ps.logDir, e.Name()), lines))
	}
}

// scanLogs fails the test for a panic or a data race in any child's log.
func (ps *Procs) scanLogs() {
	entries, _ := os.ReadDir(ps.logDir)
	for _, e := range entries {
		path := filepath.Join(ps.logDir, e.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		for _, bad := range []string{"WARNING: DATA RACE", "panic: "} {
			if i := bytes.Index(data, []byte(bad)); i >= 0 {
				end := min(len(data), i+3000)
				ps.t.Errorf("%s in %s:\n%s", strings.TrimSpace(bad), path, data[i:end])
			}
		}
	}
}

// Tail is the last n lines of the file at path.
func Tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	ls := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

var httpc = &http.Client{Timeout: 5 * time.Second}

// Healthy reports whether ferry's GET /healthz at addr answers 200, and
// the aggregate log sequence its read models have applied.
func Healthy(addr string) (bool, uint64) {
	resp, err := httpc.Get("http://" + addr + "/healthz")
	if err != nil {
		return false, 0
	}
	defer resp.Body.Close()
	var h struct {
		AggSeq uint64 `json:"aggregateLogSeq"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&h)
	return resp.StatusCode == http.StatusOK, h.AggSeq
}

// WaitHealthy waits for ferry's /healthz at addr to answer 200 while p
// runs.
func WaitHealthy(t testing.TB, p *Proc, addr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if ok, _ := Healthy(addr); ok {
			return
		}
		if !p.Running() {
			t.Fatalf("%s exited before it was healthy: %v (log %s)\n%s", p.Name, p.Err(), p.Log, Tail(p.Log, 40))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not healthy within %s (log %s)\n%s", p.Name, timeout, p.Log, Tail(p.Log, 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Metric reads one unlabelled gauge of ferry's GET /metrics at addr.
func Metric(addr, name string) (float64, bool) {
	resp, err := httpc.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// Leading waits up to timeout for the aggregator of the ferry at addr to
// lead (its ferry_aggregator_leader gauge is 1).
func Leading(ctx context.Context, addr string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if v, ok := Metric(addr, "ferry_aggregator_leader"); ok && v == 1 {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// Run runs bin to completion, with at most timeout, and returns its
// combined output.
func Run(ctx context.Context, timeout time.Duration, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = CleanEnv()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// EnvInt is the environment variable name as a number ≥ 0, or def.
func EnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v >= 0 {
		return v
	}
	return def
}

// EnvDur is the environment variable name as a positive duration, or def.
func EnvDur(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// EnvStr is the environment variable name, or def when it is empty.
func EnvStr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// Main is a tier's TestMain: it builds the tier's binaries into a temp
// dir (build is given the dir), runs the tests and removes the dir,
// returning the exit code.
func Main(m *testing.M, tier string, build func(dir string) error) int {
	dir, err := os.MkdirTemp("", "ferry-"+tier+"-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := build(dir); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", tier, err)
		return 1
	}
	return m.Run()
}

// Context ends a minute before the test's deadline, so a stuck run fails
// with its diagnostics rather than a panic.
func Context(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	if d, ok := t.Deadline(); ok {
		ctx, cancel = context.WithDeadline(context.Background(), d.Add(-time.Minute))
	}
	t.Cleanup(cancel)
	return ctx
}
