//go:build e2e

// Package e2e runs ferry against a real kubo node: content added to kubo
// is pinned through ferry's Pinning Service API (by ferry's own HTTP calls
// and by kubo's `ipfs pin remote`), fetched through kubo's gateway and its
// RPC, verified, stored, folded into an aggregate and dealt by the
// simulator; every CAR ferry made is imported into a second, empty kubo
// and must reproduce the DAG, and its piece must be what
// go-fil-commp-hashhash computes over the file.
//
// ferry pack is checked the same way (pack_test.go): a tree of every case
// packed into CARs that kubo imports and gives back byte for byte, with
// kubo's own file and directory CIDs; a pack killed with SIGKILL and run
// again; a pack whose CARs go to deals through a running ferry serve.
//
// The README's walk-through ("Five minutes with ferry") runs as written,
// its ```sh blocks in one bash, in a network namespace of its own for the
// fixed ports it names (readme_test.go).
//
//	make e2e    # builds kubo v0.32.1 once (scripts/kubo.sh), then this
//
// FERRY_KUBO names the ipfs binary and FERRY_S3_SERVER SeaweedFS's, for
// the pin stored in an S3 bucket (make e2e sets both); E2E_LOGDIR keeps
// the processes' logs.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/internal/proctest"
	"github.com/ferry-dev/ferry/internal/s3test"
	commp "github.com/filecoin-project/go-fil-commp-hashhash"
)

var bins struct{ ferry, ipfs string }

const (
	writeToken  = "e2e-write-token"
	reportToken = "e2e-report-token"
)

func TestMain(m *testing.M) {
	if os.Getenv(withoutDACEnv) != "" {
		execWithoutDAC(os.Args[1:])
	}
	bins.ipfs = os.Getenv("FERRY_KUBO")
	if bins.ipfs == "" {
		fmt.Fprintln(os.Stderr, "e2e: FERRY_KUBO must name kubo's ipfs binary (make e2e sets it from scripts/kubo.sh)")
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "ferry-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins.ferry = filepath.Join(dir, "ferry")
	if err := proctest.Build(bins.ferry, "./cmd/ferry"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// kubo is one kubo repo, and its daemon when started.
type kubo struct {
	t       *testing.T
	path    string // IPFS_PATH
	api     string // 127.0.0.1:port of the RPC API
	gateway string // 127.0.0.1:port of the gateway
	daemon  *proctest.Proc
}

// newKubo makes an offline kubo repo on loopback: the test profile, no
// routing, no bootstrap peers, no MDNS, API and gateway on free ports.
func newKubo(t *testing.T, ps *proctest.Procs, name string) *kubo {
	k := &kubo{t: t, path: filepath.Join(t.TempDir(), name),
		api:     fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t)),
		gateway: fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))}
	k.run("init", "--profile", "test")
	k.run("config", "Routing.Type", "none")
	k.run("config", "--json", "Bootstrap", "[]")
	k.run("config", "--json", "Discovery.MDNS.Enabled", "false")
	k.run("config", "Addresses.API", "/ip4/"+strings.Replace(k.api, ":", "/tcp/", 1))
	k.run("config", "Addresses.Gateway", "/ip4/"+strings.Replace(k.gateway, ":", "/tcp/", 1))
	k.run("config", "--json", "Addresses.Swarm", `["/ip4/127.0.0.1/tcp/0"]`)
	return k
}

func (k *kubo) env() []string { return []string{"IPFS_PATH=" + k.path} }

// run runs an ipfs command on the repo and returns its trimmed stdout.
func (k *kubo) run(args ...string) string {
	k.t.Helper()
	out, err := k.try(args...)
	if err != nil {
		k.t.Fatalf("ipfs %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func (k *kubo) try(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.ipfs, args...)
	cmd.Env = append(proctest.CleanEnv(), k.env()...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%v: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// start runs the daemon offline and waits for its API. Offline, kubo
// answers a block it lacks at once, as not found (its gateway with a 200
// and a CAR of the header only), instead of waiting for a peer.
func (k *kubo) start(ps *proctest.Procs) {
	k.t.Helper()
	k.daemon = ps.StartEnv("ipfs-"+filepath.Base(k.path), k.env(), bins.ipfs, "daemon", "--offline")
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Post("http://"+k.api+"/api/v0/id", "", nil)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if !k.daemon.Running() || time.Now().After(deadline) {
			k.t.Fatalf("kubo daemon not up: %v\n%s", k.daemon.Err(), proctest.Tail(k.daemon.Log, 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ferryNode is ferry serve with its simulator.
type ferryNode struct {
	t    *testing.T
	addr string // HTTP host:port
	proc *proctest.Proc
}

// startFerry runs the simulator and ferry serve with the given fetch flags
// on a small deal size, so that one pinned DAG fills an aggregate soon.
func startFerry(t *testing.T, ps *proctest.Procs, name string, fetchFlags ...string) *ferryNode {
	return startFerryEnv(t, ps, name, nil, fetchFlags...)
}

// startFerryEnv is startFerry with extra environment variables for serve.
func startFerryEnv(t *testing.T, ps *proctest.Procs, name string, env []string, fetchFlags ...string) *ferryNode {
	dir := t.TempDir()
	sim := fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))
	ps.Start(name+"-sim", bins.ferry, "spade-sim", "--listen", sim, "--report-token", reportToken,
		"--delay", "100ms", "--tmp", filepath.Join(dir, "sim"))
	f := &ferryNode{t: t, addr: fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t))}
	args := append([]string{"serve", "--data", filepath.Join(dir, "data"), "--http", f.addr,
		"--nats-listen", fmt.Sprintf("127.0.0.1:%d", proctest.FreePort(t)),
		"--write-token", writeToken, "--report-token", reportToken,
		"--deal-size", "16MiB", "--min-payload", "16KiB", "--tick", "200ms", "--max-wait", "1s",
		"--deal-engine", "http://" + sim + "/offers", "--offer-retry", "1s", "--offer-backoff", "1s",
		"--piece-workers", "1", "--fetch-workers", "2"}, fetchFlags...)
	if err := os.MkdirAll(filepath.Join(dir, "sim"), 0o755); err != nil {
		t.Fatal(err)
	}
	f.proc = ps.StartEnv(name, env, bins.ferry, args...)
	proctest.WaitHealthy(t, f.proc, f.addr, 90*time.Second)
	return f
}

// pinStatus is the part of a Pinning Service PinStatus the test reads.
type pinStatus struct {
	RequestID string `json:"requestid"`
	Status    string `json:"status"`
	Pin       struct {
		CID  string `json:"cid"`
		Name string `json:"name"`
	} `json:"pin"`
	Info map[string]any `json:"info"`
}

func (f *ferryNode) do(method, path string, body any, out any) int {
	f.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+f.addr+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+writeToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(data, out); err != nil {
			f.t.Fatalf("%s %s: %v in %s", method, path, err, data)
		}
	}
	if resp.StatusCode >= 300 {
		f.t.Logf("%s %s: %d %s", method, path, resp.StatusCode, data)
	}
	return resp.StatusCode
}

// pin asks ferry to pin cid through the Pinning Service API.
func (f *ferryNode) pin(cid, name string) pinStatus {
	f.t.Helper()
	var st pinStatus
	if code := f.do("POST", "/psa/pins", map[string]any{"cid": cid, "name": name}, &st); code != http.StatusAccepted {
		f.t.Fatalf("POST /psa/pins %s: %d, want 202", cid, code)
	}
	if st.RequestID == "" || st.Pin.CID != cid {
		f.t.Fatalf("POST /psa/pins %s answered %+v", cid, st)
	}
	return st
}

// waitPin polls a pin until its status is want (or a final other one).
func (f *ferryNode) waitPin(id, want string, timeout time.Duration) pinStatus {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	var st pinStatus
	for {
		st = pinStatus{}
		if code := f.do("GET", "/psa/pins/"+id, nil, &st); code != http.StatusOK {
			f.t.Fatalf("GET /psa/pins/%s: %d", id, code)
		}
		if st.Status == want {
			return st
		}
		if st.Status == "failed" || st.Status == "pinned" {
			f.t.Fatalf("pin %s is %s (info %v), want %s", id, st.Status, st.Info, want)
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("pin %s still %s after %s, want %s (info %v)", id, st.Status, timeout, want, st.Info)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// carOf is the CAR CID a pinned pin's status names.
func carOf(t *testing.T, st pinStatus) string {
	t.Helper()
	switch v := st.Info["car"].(type) {
	case string:
		return v
	case map[string]any:
		if s, ok := v["car"].(string); ok {
			return s
		}
	}
	t.Fatalf("pinned pin %s names no CAR in info: %v", st.RequestID, st.Info)
	return ""
}

// carView is what GET /v1/cars/{cid} answers, the part the test reads.
type carView struct {
	Car       string   `json:"car"`
	State     string   `json:"state"`
	Size      uint64   `json:"size"`
	MD5       string   `json:"md5"`
	URLs      []string `json:"urls"`
	Piece     string   `json:"piece"`
	PieceSize uint64   `json:"pieceSize"`
	Aggregate uint64   `json:"aggregate"`
}

// waitCar polls the status of a CAR until it is in state.
func (f *ferryNode) waitCar(car, state string, timeout time.Duration) carView {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	var v carView
	for {
		v = carView{}
		code := f.do("GET", "/v1/cars/"+car, nil, &v)
		if code == http.StatusOK && v.State == state {
			return v
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("CAR %s is %q (HTTP %d) after %s, want %s", car, v.State, code, timeout, state)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkCAR downloads a CAR ferry made from the URL its status names,
// requires its piece to be go-fil-commp-hashhash's over the downloaded
// bytes, imports it into a fresh kubo repo and requires the DAG under root
// to be the one the source kubo holds.
func checkCAR(t *testing.T, ps *proctest.Procs, src *kubo, v carView, root string) {
	t.Helper()
	if len(v.URLs) != 1 {
		t.Fatalf("CAR %s has URLs %v, want the one of ferry's CAR store", v.Car, v.URLs)
	}
	resp, err := http.Get(v.URLs[0])
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", v.URLs[0], resp.StatusCode, err)
	}
	if uint64(len(data)) != v.Size {
		t.Fatalf("CAR %s: %d bytes served, status says %d", v.Car, len(data), v.Size)
	}
	var cp commp.Calc
	cp.Write(data)
	requirePiece(t, "CAR "+v.Car, &cp, v.Piece)
	file := filepath.Join(t.TempDir(), v.Car+".car")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	dst := newKubo(t, ps, "import-"+root[len(root)-8:])
	dst.run("dag", "import", "--pin-roots=false", file)
	for _, cmd := range [][]string{{"dag", "stat", "--progress=false", root}, {"refs", "-r", root}} {
		want := src.run(append([]string{"--offline"}, cmd...)...)
		got := dst.run(append([]string{"--offline"}, cmd...)...)
		if got != want {
			t.Fatalf("ipfs %s after dag import of %s:\n%s\nthe source kubo:\n%s", strings.Join(cmd, " "), v.Car, got, want)
		}
	}
}

// content is what the source kubo holds: a nested tree with a few MiB file
// (256 KiB chunks), a file whose DAG has two levels (4 KiB chunks: more
// leaves than kubo's 174 links a node) and a single-block file.
type content struct{ tree, multi, small string }

// writeRandomTree writes files of random bytes, path → size, under dir.
func writeRandomTree(t *testing.T, dir string, files map[string]int) {
	t.Helper()
	for name, n := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, n)
		rand.Read(b)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func addContent(t *testing.T, k *kubo) content {
	dir := filepath.Join(t.TempDir(), "tree")
	writeRandomTree(t, dir, map[string]int{"a/b/big.bin": 3<<20 + 123, "a/notes.txt": 2000, "c/d/e/deep.bin": 70000, "top.bin": 1})
	multi := filepath.Join(t.TempDir(), "multi.bin")
	b := make([]byte, 1<<20)
	rand.Read(b)
	if err := os.WriteFile(multi, b, 0o644); err != nil {
		t.Fatal(err)
	}
	small := filepath.Join(t.TempDir(), "small.txt")
	if err := os.WriteFile(small, []byte("a single block, pinned through kubo's RPC\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := content{
		tree:  k.run("add", "-r", "-Q", "--cid-version=1", dir),
		multi: k.run("add", "-Q", "--cid-version=1", "--chunker=size-4096", multi),
		small: k.run("add", "-Q", "--cid-version=1", small),
	}
	if levels := len(strings.Fields(k.run("refs", c.multi))); levels > 174 || levels < 2 {
		t.Fatalf("the multi-level file's root has %d links, want a second level", levels)
	}
	return c
}

func TestPinsThroughKubo(t *testing.T) {
	ps := proctest.New(t, os.Getenv("E2E_LOGDIR"))
	src := newKubo(t, ps, "source")
	c := addContent(t, src)
	src.start(ps)

	// Gateways only: kubo's gateway is the source.
	gw := startFerry(t, ps, "ferry-gw",
		"--fetch-gateways", "http://"+src.gateway, "--fetch-allow-private",
		"--fetch-timeout", "15s", "--fetch-stall-timeout", "10s")

	t.Run("pinning service API through kubo's gateway", func(t *testing.T) {
		gw.t = t
		st := gw.pin(c.tree, "tree")
		st = gw.waitPin(st.RequestID, "pinned", 2*time.Minute)
		car := carOf(t, st)
		v := gw.waitCar(car, "DEAL_PROCESSED", 2*time.Minute)
		checkCAR(t, ps, src, v, c.tree)
		// ferry status answers the pinned CID's CAR.
		out, err := exec.Command(bins.ferry, "status", "--server", gw.addr, car).CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"DEAL_PROCESSED"`) {
			t.Fatalf("ferry status %s: %v\n%s", car, err, out)
		}
	})

	t.Run("kubo's ipfs pin remote", func(t *testing.T) {
		gw.t = t
		src.run("pin", "remote", "service", "add", "ferry", "http://"+gw.addr+"/psa", writeToken)
		src.run("pin", "remote", "add", "--service=ferry", "--background", "--name=multi", c.multi)
		deadline := time.Now().Add(2 * time.Minute)
		for {
			out, err := src.try("pin", "remote", "ls", "--service=ferry", "--status=pinned")
			if err == nil && strings.Contains(out, c.multi) {
				break
			}
			if time.Now().After(deadline) {
				all, _ := src.try("pin", "remote", "ls", "--service=ferry", "--status=queued,pinning,pinned,failed")
				t.Fatalf("ipfs pin remote ls --status=pinned does not list %s after 2m (%v): %s\nevery status: %s", c.multi, err, out, all)
			}
			time.Sleep(500 * time.Millisecond)
		}
		var list struct {
			Count   int         `json:"count"`
			Results []pinStatus `json:"results"`
		}
		if code := gw.do("GET", "/psa/pins?cid="+c.multi, nil, &list); code != http.StatusOK || list.Count != 1 {
			t.Fatalf("GET /psa/pins?cid=%s: %d %+v", c.multi, code, list)
		}
		v := gw.waitCar(carOf(t, list.Results[0]), "DEAL_PROCESSED", 2*time.Minute)
		checkCAR(t, ps, src, v, c.multi)
	})

	t.Run("a CID kubo does not have fails, it does not stay queued", func(t *testing.T) {
		gw.t = t
		other := filepath.Join(t.TempDir(), "absent.txt")
		if err := os.WriteFile(other, []byte("never added to the source kubo\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		absent := src.run("add", "-Q", "--cid-version=1", "--only-hash", other)
		st := gw.pin(absent, "absent")
		st = gw.waitPin(st.RequestID, "failed", 2*time.Minute)
		details, _ := st.Info["status_details"].(string)
		if !strings.Contains(details, "not found at any source") {
			t.Fatalf("the absent CID failed with %q, want not found at any source", details)
		}
	})

	// The production CAR store: an S3 bucket (SeaweedFS on loopback), its
	// objects downloaded at the bucket's public URL by the simulator and
	// the test.
	t.Run("a pin stored in an S3 bucket", func(t *testing.T) {
		endpoint := s3test.Start(t)
		bucket := startFerryEnv(t, ps, "ferry-s3",
			[]string{"AWS_ACCESS_KEY_ID=" + s3test.Key, "AWS_SECRET_ACCESS_KEY=" + s3test.Secret},
			"--fetch-gateways", "http://"+src.gateway, "--fetch-allow-private",
			"--car-store", "s3://"+s3test.Bucket+"/pins?endpoint="+endpoint+"&secure=false",
			"--car-store-url", "http://"+endpoint+"/"+s3test.Bucket)
		st := bucket.pin(c.tree, "in a bucket")
		st = bucket.waitPin(st.RequestID, "pinned", 2*time.Minute)
		v := bucket.waitCar(carOf(t, st), "DEAL_PROCESSED", 2*time.Minute)
		if want := "http://" + endpoint + "/" + s3test.Bucket + "/pins/" + v.Car + ".car"; len(v.URLs) != 1 || v.URLs[0] != want {
			t.Fatalf("the CAR's URLs %v, want the bucket's object %s", v.URLs, want)
		}
		checkCAR(t, ps, src, v, c.tree)
	})

	// kubo's RPC only (pickup's way): a second ferry without gateways.
	t.Run("kubo's RPC dag export", func(t *testing.T) {
		rpc := startFerry(t, ps, "ferry-rpc",
			"--fetch-kubo-rpc", "http://"+src.api, "--fetch-allow-private",
			"--fetch-timeout", "15s", "--fetch-stall-timeout", "10s")
		// Both at once: the single block's CAR alone is below the
		// aggregate's minimum payload.
		roots := []string{c.small, c.tree}
		var ids []string
		for _, cid := range roots {
			ids = append(ids, rpc.pin(cid, "rpc").RequestID)
		}
		for i, id := range ids {
			st := rpc.waitPin(id, "pinned", 2*time.Minute)
			v := rpc.waitCar(carOf(t, st), "DEAL_PROCESSED", 2*time.Minute)
			checkCAR(t, ps, src, v, roots[i])
		}
		// kubo's RPC answers a CID it lacks with a 500 "not found": the
		// pin fails "not found at any source" after --fetch-timeout.
		other := filepath.Join(t.TempDir(), "absent-rpc.txt")
		if err := os.WriteFile(other, []byte("never added, asked of kubo's RPC\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		st := rpc.pin(src.run("add", "-Q", "--cid-version=1", "--only-hash", other), "absent")
		st = rpc.waitPin(st.RequestID, "failed", 2*time.Minute)
		if d := st.Info["status_details"]; !strings.Contains(fmt.Sprint(d), "not found at any source") {
			t.Fatalf("the absent CID failed with %q through kubo's RPC, want not found at any source", d)
		}
	})
}
