//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/client"
	"github.com/ferry-dev/ferry/internal/proctest"
	"golang.org/x/sys/unix"
)

// substitution is one row of the table in readmeSubstitutions.
type substitution struct{ section, from, to string }

// readmeSubstitutions is the one substitution table between the README's
// walk-through and what the test runs: only what a reader must put in
// themselves (their files, the CIDs they got) and the scratch paths, so
// the README stays the single source of the commands. Rows apply in
// order to every ```sh block of the section named (or of every section
// when section is empty); the values are bash, run in the walk-through's
// shell, where $W is the test's directory and $FERRY_BIN the directory on
// PATH.
func readmeSubstitutions(photosRoot string) []substitution {
	return []substitution{
		// make build is go build -o bin/ferry ./cmd/ferry: the same
		// build, into the test's directory instead of the checkout's bin/.
		{"", "make build", `go build -o "$FERRY_BIN/ferry" ./cmd/ferry`},
		{"", "$PWD/bin", "$FERRY_BIN"},
		// The reader's files, and the CID kubo gives for them (written
		// out: the README has it inside single quotes too).
		{"", "~/photos", "$W/photos"},
		{"", "bafy…", photosRoot},
		// "Your CAR": one the section made.
		{"Five minutes with ferry", "bagbaiera…", `$(ls "$W/cars" | grep '\.car$' | head -1 | sed 's/\.car$//')`},
		{"Pin a CID", "bagbaiera…", `$(ferry pins | jq -r 'select(.status=="pinned") | .info.car' | head -1)`},
		{"Pack a directory", "bagbaiera…", `$(jq -r '.pieces[0].car' "$W/cars/manifest.json")`},
		// Scratch space: /tmp/cars, /tmp/ferry-data.
		{"", "/tmp/", "$W/"},
	}
}

// readmeWaits are the pauses a reader makes without thinking: a server
// started with & is up before the next command is typed. After a block
// containing the marker, the test waits until the address answers.
var readmeWaits = []struct{ marker, addr string }{
	{"ferry spade-sim", "127.0.0.1:9000"},
	{"ferry serve", "127.0.0.1:8080"},
	{"ipfs daemon", "127.0.0.1:8081"},
}

// readmeBlock is one ```sh block of the walk-through.
type readmeBlock struct {
	section string // the ## or ### heading it is under
	text    string
}

// readmeWalkThrough returns the ```sh blocks of the "Five minutes with
// ferry" section of README.md and its subsections, in order.
func readmeWalkThrough(t *testing.T, readme string) []readmeBlock {
	t.Helper()
	var blocks []readmeBlock
	section, in := "", false
	var cur strings.Builder
	inBlock := false
	for line := range strings.Lines(readme) {
		switch {
		case inBlock && strings.HasPrefix(line, "```"):
			blocks = append(blocks, readmeBlock{section, cur.String()})
			cur.Reset()
			inBlock = false
		case inBlock:
			cur.WriteString(line)
		case strings.HasPrefix(line, "## "):
			section = strings.TrimSpace(line[3:])
			in = section == "Five minutes with ferry"
		case strings.HasPrefix(line, "### "):
			section = strings.TrimSpace(line[4:])
		case in && strings.TrimSpace(line) == "```sh":
			inBlock = true
		}
	}
	if len(blocks) == 0 {
		t.Fatal(`README.md has no ` + "```sh" + ` blocks under "## Five minutes with ferry"`)
	}
	return blocks
}

func substitute(table []substitution, b readmeBlock) string {
	s := b.text
	for _, r := range table {
		if r.section == "" || r.section == b.section {
			s = strings.ReplaceAll(s, r.from, r.to)
		}
	}
	return s
}

const readmeNetnsEnv = "E2E_README_NETNS"

// TestREADMEWalkThrough runs the README's "Five minutes with ferry" as
// written, block by block in one bash with job control (the README
// starts servers with & and stops them with kill %…), and checks what the
// README promises after each. The README names fixed loopback ports
// (8080, 9000, 4222, 8081), so the walk-through runs in a network
// namespace of its own: the test binary starts itself again inside one,
// where those ports are free whatever else runs on the machine.
func TestREADMEWalkThrough(t *testing.T) {
	if os.Getenv(readmeNetnsEnv) == "" {
		rerunInNetns(t)
		return
	}
	if err := loopbackUp(); err != nil {
		t.Fatalf("bringing lo up in the new network namespace: %v", err)
	}
	root, err := proctest.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeWalkThrough(t, string(readme))

	w := t.TempDir()
	binDir := filepath.Join(w, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(bins.ipfs, filepath.Join(binDir, "ipfs")); err != nil {
		t.Fatal(err)
	}
	photos := makePhotos(t, filepath.Join(w, "photos"))
	subst := readmeSubstitutions(photos.root)
	sh := startWalkShell(t, root, w, binDir)
	// "A kubo of your own": an initialized repo, offline and on loopback.
	sh.run(t, "kubo of your own", `ipfs init --profile test >/dev/null
ipfs config Routing.Type none
ipfs config --json Bootstrap '[]'
ipfs config --json Discovery.MDNS.Enabled false`)

	ctx := proctest.Context(t)
	api := client.NewHTTP("127.0.0.1:8080")
	start := time.Now()
	published := 0
	for i, b := range blocks {
		script := substitute(subst, b)
		t.Logf("block %d (%s):\n%s", i+1, b.section, script)
		blockStart := time.Now()
		out := sh.run(t, fmt.Sprintf("block %d", i+1), script)
		t.Logf("block %d output (%v):\n%s", i+1, time.Since(blockStart).Round(time.Millisecond), out)
		for _, wt := range readmeWaits {
			if strings.Contains(b.text, wt.marker) && strings.Contains(b.text, "&\n") {
				waitListening(t, wt.addr, 60*time.Second)
			}
		}
		has := func(sub string) bool { return strings.Contains(b.text, sub) }
		if has("ferry publish") {
			// Every CAR of the directory is counted, the new ones
			// accepted and those sent before duplicate.
			cars := carFiles(t, filepath.Join(w, "cars"))
			want := fmt.Sprintf("accepted %d, duplicate %d, conflict 0, rejected 0, not acknowledged 0", len(cars)-published, published)
			if !regexp.MustCompile(fmt.Sprintf(`published %d events in .*: %s`, len(cars), want)).MatchString(out) {
				t.Fatalf("ferry publish of %d CARs (%d before) printed\n%s\nwant %q", len(cars), published, out, want)
			}
			published = len(cars)
		}
		if has("ferry aggregates close") {
			m := regexp.MustCompile(`close of aggregate (\d+) requested`).FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("ferry aggregates close printed no close:\n%s", out)
			}
			poll(t, 60*time.Second, "the closed aggregate "+m[1]+" leaves INGESTING", func() (bool, string) {
				v, err := api.Aggregate(ctx, m[1], -1, 1)
				if err != nil {
					return false, err.Error()
				}
				return v.State != "INGESTING", v.State
			})
			// "A few seconds later every aggregate is DEAL_PROCESSED."
			allProcessed(t, ctx, api, carFiles(t, filepath.Join(w, "cars")), 60*time.Second)
		}
		if has("ferry receipts") {
			// One receipt per CAR, each with its deals, and the manifest.
			receipts := 0
			for line := range strings.Lines(out) {
				var r struct {
					Car   string            `json:"car"`
					Deals []json.RawMessage `json:"deals"`
				}
				if json.Unmarshal([]byte(line), &r) == nil && r.Car != "" && len(r.Deals) > 0 {
					receipts++
				}
			}
			if receipts != published {
				t.Fatalf("ferry receipts printed %d receipts with deals, want %d:\n%s", receipts, published, out)
			}
			if !strings.Contains(out, `"frc58_aggregate"`) {
				t.Fatalf("no FRC-58 manifest printed:\n%s", out)
			}
		}
		if has("--failure-rate 1") {
			// Within a minute (the README's word), an aggregate fails
			// with the simulator's reason.
			poll(t, 90*time.Second, `an aggregate DEAL_FAILED with "simulated failure"`, func() (bool, string) {
				page, err := api.Aggregates(ctx, "DEAL_FAILED", 0, 100)
				if err != nil {
					return false, err.Error()
				}
				for _, a := range page.Aggregates {
					if v, err := api.Aggregate(ctx, fmt.Sprint(a.ID), -1, 1); err == nil && strings.Contains(v.Reason, "simulated failure") {
						return true, ""
					}
				}
				return false, fmt.Sprintf("%d DEAL_FAILED", len(page.Aggregates))
			})
		}
		if has("--state DEAL_FAILED") {
			if !strings.Contains(out, "DEAL_FAILED") {
				t.Fatalf("ferry aggregates --state DEAL_FAILED listed none:\n%s", out)
			}
		}
		if has("kill %?spade-sim") && !has("--failure-rate") {
			// The simulator is back: within a few minutes every CAR is
			// DEAL_PROCESSED, with no report written by hand.
			healed := time.Now()
			allProcessed(t, ctx, api, carFiles(t, filepath.Join(w, "cars")), 4*time.Minute)
			t.Logf("every CAR DEAL_PROCESSED %v after the simulator came back", time.Since(healed).Round(time.Second))
		}
		if has("ferry pin ") {
			// curl answers a PinStatus (its status is not curl's exit).
			if strings.Contains(out, `"error"`) || !strings.Contains(out, `"queued"`) {
				t.Fatalf("the pin requests were not queued:\n%s", out)
			}
			// In a few seconds the DAG is fetched and pinned.
			poll(t, 90*time.Second, "the pins pinned", func() (bool, string) {
				var page struct {
					Count   int         `json:"count"`
					Results []pinStatus `json:"results"`
				}
				if err := getJSON("http://127.0.0.1:8080/psa/pins?status=pinned", &page); err != nil {
					return false, err.Error()
				}
				for _, p := range page.Results {
					if p.Pin.CID != photos.root || p.Info["car"] == nil {
						return false, fmt.Sprint(page.Results)
					}
				}
				return page.Count > 0 && page.Count == len(page.Results), fmt.Sprint(page.Count, " pinned")
			})
		}
		if has("ferry pins") {
			car := pinnedCar(t, out)
			if !strings.Contains(out, `"car": "`+car+`"`) && !strings.Contains(out, `"car":"`+car+`"`) {
				t.Fatalf("ferry status of the pin's CAR %s printed\n%s", car, out)
			}
		}
		if has("ferry pack") {
			checkPack(t, ctx, api, w, out)
		}
		if has("ferry replay") {
			if !regexp.MustCompile(`replayed \d+ batches`).MatchString(out) {
				t.Fatalf("ferry replay printed no replay:\n%s", out)
			}
		}
	}
	t.Logf("the walk-through took %v", time.Since(start).Round(time.Second))
}

// allProcessed waits until every CAR is DEAL_PROCESSED.
func allProcessed(t *testing.T, ctx context.Context, api *client.HTTP, cars []string, timeout time.Duration) {
	t.Helper()
	poll(t, timeout, fmt.Sprintf("all %d CARs DEAL_PROCESSED", len(cars)), func() (bool, string) {
		states := map[string]int{}
		for _, c := range cars {
			v, err := api.Car(ctx, c)
			if err != nil {
				return false, c + ": " + err.Error()
			}
			states[v.State]++
		}
		return states["DEAL_PROCESSED"] == len(cars), fmt.Sprint(states)
	})
}

// photosTree is the test's ~/photos.
type photosTree struct{ root string }

// makePhotos writes a small tree with the file the README's jq looks for.
func makePhotos(t *testing.T, dir string) photosTree {
	t.Helper()
	writeRandomTree(t, dir, map[string]int{"2024/beach.jpg": 1 << 20, "2024/dunes.jpg": 700 << 10, "2025/snow.jpg": 1500 << 10, "notes.txt": 300})
	k := &kubo{t: t, path: filepath.Join(t.TempDir(), "hash")}
	k.run("init", "--profile", "test")
	return photosTree{root: k.run("add", "-r", "-Q", "--cid-version=1", "--only-hash", dir)}
}

// walkShell is the bash the walk-through runs in: one process for all
// blocks, so jobs started with & in one block can be stopped in another.
type walkShell struct {
	cmds  *os.File // chunks to run, each ended by a NUL
	lines chan string
	pids  map[string]bool // every job's pid, stopped at cleanup
}

const (
	walkDone = "__FERRY_README_DONE"
	walkFail = "__FERRY_README_FAIL"
)

// startWalkShell starts bash in the module root (where a reader who
// cloned ferry types the commands) with job control on (set -m, as an
// interactive shell has it). Its stdin is /dev/null, so that no job reads
// the commands meant for the shell: they come on fd 3. A command that
// fails is reported by the ERR trap (wait's status is the stopped job's,
// so not a failure), and each chunk ends with a marker line listing the
// jobs' pids.
func startWalkShell(t *testing.T, root, w, binDir string) *walkShell {
	t.Helper()
	r, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	loop := `set -m -E
trap '__rc=$?; case $BASH_COMMAND in wait*) ;; *) echo "` + walkFail + ` $__rc: $BASH_COMMAND";; esac' ERR
while IFS= read -r -d '' __chunk <&3; do
  eval "$__chunk"
  echo "` + walkDone + ` $(jobs -p | tr '\n' ' ')"
done`
	cmd := exec.Command("bash", "--noprofile", "--norc", "-c", loop)
	cmd.Dir = root
	cmd.Env = append(proctest.CleanEnv(), "W="+w, "FERRY_BIN="+binDir,
		"PATH="+binDir+string(os.PathListSeparator)+os.Getenv("PATH"),
		"IPFS_PATH="+filepath.Join(w, "ipfs"))
	cmd.ExtraFiles = []*os.File{r}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	sh := &walkShell{cmds: wr, lines: make(chan string, 1024), pids: map[string]bool{}}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			sh.lines <- sc.Text()
		}
		close(sh.lines)
	}()
	t.Cleanup(func() {
		wr.Close()
		sh.signalJobs(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
		}
		time.Sleep(2 * time.Second)
		sh.signalJobs(syscall.SIGKILL)
	})
	return sh
}

// signalJobs signals every job's process group (each job is its own
// under set -m).
func (sh *walkShell) signalJobs(sig syscall.Signal) {
	for pid := range sh.pids {
		var n int
		if _, err := fmt.Sscan(pid, &n); err == nil && n > 0 {
			syscall.Kill(-n, sig)
		}
	}
}

// run runs one chunk and returns its output; a failed command fails the
// test.
func (sh *walkShell) run(t *testing.T, name, script string) string {
	t.Helper()
	if _, err := io.WriteString(sh.cmds, script+"\x00"); err != nil {
		t.Fatalf("%s: writing to bash: %v", name, err)
	}
	var out strings.Builder
	timeout := time.After(3 * time.Minute)
	for {
		select {
		case line, ok := <-sh.lines:
			if !ok {
				t.Fatalf("%s: bash exited; output:\n%s", name, out.String())
			}
			if rest, ok := strings.CutPrefix(line, walkDone); ok {
				for _, pid := range strings.Fields(rest) {
					sh.pids[pid] = true
				}
				if strings.Contains(out.String(), walkFail) {
					t.Fatalf("%s: a command failed:\n%s", name, out.String())
				}
				return out.String()
			}
			out.WriteString(line + "\n")
		case <-timeout:
			t.Fatalf("%s: not done in 3 minutes; output so far:\n%s", name, out.String())
		}
	}
}

// rerunInNetns runs this test again in a new network namespace (as root,
// or in a new user namespace too) and fails if it fails there.
func rerunInNetns(t *testing.T) {
	attr := &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if os.Geteuid() != 0 {
		attr.Cloneflags |= syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1", "-test.timeout=9m")
	cmd.Env = append(os.Environ(), readmeNetnsEnv+"=1")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = attr
	// Pdeathsig follows the thread that started the child: keep it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Run(); err != nil {
		t.Fatalf("the walk-through in its network namespace: %v", err)
	}
}

// loopbackUp sets lo up: a new network namespace starts with it down.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

func waitListening(t *testing.T, addr string, timeout time.Duration) {
	t.Helper()
	poll(t, timeout, addr+" listening", func() (bool, string) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		if addr == "127.0.0.1:8080" {
			ok, _ := proctest.Healthy(addr)
			return ok, "not healthy"
		}
		return true, ""
	})
}

// poll calls cond every half second until it holds or the deadline
// passes; what it last said is in the failure.
func poll(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not %s within %v: %s", what, timeout, last)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s: %s: %s", url, resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// carFiles lists the CAR CIDs of the .car files in dir.
func carFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.car"))
	if err != nil {
		t.Fatal(err)
	}
	var cids []string
	for _, p := range m {
		cids = append(cids, strings.TrimSuffix(filepath.Base(p), ".car"))
	}
	return cids
}

// pinnedCar is info.car of the first pinned pin in ferry pins' output.
func pinnedCar(t *testing.T, out string) string {
	t.Helper()
	for line := range strings.Lines(out) {
		var p pinStatus
		if json.Unmarshal([]byte(line), &p) == nil && p.Status == "pinned" {
			if car, ok := p.Info["car"].(string); ok {
				return car
			}
		}
	}
	t.Fatalf("ferry pins printed no pinned pin with info.car:\n%s", out)
	return ""
}

// checkPack checks the pack section's promises: the files packed, the
// manifest's entry for 2024/beach.jpg, and every packed CAR published to
// ferry.
func checkPack(t *testing.T, ctx context.Context, api *client.HTTP, w, out string) {
	t.Helper()
	if !regexp.MustCompile(`packed \d+ files`).MatchString(out) {
		t.Fatalf("ferry pack printed no summary:\n%s", out)
	}
	if !strings.Contains(out, `"path": "2024/beach.jpg"`) && !strings.Contains(out, `"path":"2024/beach.jpg"`) {
		t.Fatalf("jq found no 2024/beach.jpg in the manifest:\n%s", out)
	}
	b, err := os.ReadFile(filepath.Join(w, "cars", "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Pieces []struct {
			Car string `json:"car"`
		} `json:"pieces"`
	}
	if err := json.Unmarshal(b, &m); err != nil || len(m.Pieces) == 0 {
		t.Fatalf("manifest.json: %v, %d pieces", err, len(m.Pieces))
	}
	for _, p := range m.Pieces {
		if _, err := api.Car(ctx, p.Car); err != nil {
			t.Errorf("packed CAR %s not published: %v", p.Car, err)
		}
	}
}
