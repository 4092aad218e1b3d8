package fetch

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/carstore"
	"github.com/ferry-dev/ferry/internal/ipfstest"
	"github.com/ferry-dev/ferry/internal/urlpolicy"
	commp "github.com/filecoin-project/go-fil-commp-hashhash"
	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"
	"github.com/ipld/go-car/v2/storage"
	"github.com/multiformats/go-multihash"
)

// loopback allows the tests' servers on 127.0.0.1, as carcheck's tests do.
var loopback = urlpolicy.New(urlpolicy.Config{AllowPrivate: true})

type env struct {
	s   *ipfstest.Store
	gw  *ipfstest.Gateway
	dir *carstore.Dir
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir, err := carstore.OpenDir(t.TempDir(), "http://127.0.0.1:1/cars")
	if err != nil {
		t.Fatal(err)
	}
	s := ipfstest.NewStore()
	return &env{s: s, gw: ipfstest.NewGateway(t, s), dir: dir}
}

func (e *env) fetcher(cfg Config) *Fetcher {
	cfg.Policy, cfg.Store = loopback, e.dir
	if cfg.StallTimeout == 0 {
		cfg.StallTimeout = 5 * time.Second
	}
	return New(cfg)
}

// assertStored checks the stored CAR against independent computations:
// sha2-256 and md5 of the file, go-fil-commp-hashhash over it, and go-car
// reading back exactly the importer's blocks under the requested root.
func assertStored(t *testing.T, dir *carstore.Dir, res *Result, dag *ipfstest.DAG) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir.Path(), carstore.Name(res.Car)))
	if err != nil {
		t.Fatalf("stored CAR: %v", err)
	}
	sum := sha256.Sum256(data)
	mh, _ := multihash.Encode(sum[:], multihash.SHA2_256)
	if want := cid.NewCidV1(0x0202, mh); !res.Car.Equals(want) {
		t.Errorf("CAR CID %s, sha2-256 of the file gives %s", res.Car, want)
	}
	if m := md5.Sum(data); res.MD5 != hex.EncodeToString(m[:]) || res.Size != uint64(len(data)) {
		t.Errorf("md5 %s size %d, file has %x and %d bytes", res.MD5, res.Size, m, len(data))
	}
	var cp commp.Calc
	cp.Write(data)
	root, padded, err := cp.Digest()
	if err != nil || !bytes.Equal(root, res.Commitment.Root[:]) || padded != res.Commitment.Padded || res.Commitment.Payload != res.Size {
		t.Errorf("commitment %+v, go-fil-commp-hashhash gives %x/%d (%v)", res.Commitment, root, padded, err)
	}
	br, err := car.NewBlockReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(br.Roots) != 1 || !br.Roots[0].Equals(dag.Root) {
		t.Errorf("roots %v, want [%s]", br.Roots, dag.Root)
	}
	got := map[cid.Cid][]byte{}
	for {
		b, err := br.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[b.Cid()] = b.RawData()
	}
	for _, b := range dag.Blocks {
		if !bytes.Equal(got[b.Cid()], b.RawData()) {
			t.Errorf("block %s missing or different in the stored CAR", b.Cid())
		}
	}
	if len(got) != len(dag.Blocks) || res.Blocks != len(dag.Blocks) {
		t.Errorf("stored CAR has %d distinct blocks (result says %d), the importer made %d", len(got), res.Blocks, len(dag.Blocks))
	}
	if res.URL != dir.URL(res.Car) {
		t.Errorf("URL %s", res.URL)
	}
	assertNoSpool(t, dir)
}

func assertNoSpool(t *testing.T, dir *carstore.Dir) {
	t.Helper()
	left, _ := os.ReadDir(filepath.Join(dir.Path(), ".spool"))
	if len(left) != 0 {
		t.Errorf("%d spool files left", len(left))
	}
}

// assertFails checks the error's kind, that its reason says why, and that
// nothing was stored or left in the spool.
func assertFails(t *testing.T, dir *carstore.Dir, err error, kind error, reason string) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("error %v, want %v", err, kind)
	}
	if r := Reason(err); !strings.Contains(r, reason) || len(r) > 1200 {
		t.Errorf("reason %q, want it to say %q", r, reason)
	}
	if Final(err) != (kind == ErrInvalid || kind == ErrTooLarge) {
		t.Errorf("Final(%v) = %v", err, Final(err))
	}
	cars, _ := filepath.Glob(filepath.Join(dir.Path(), "*.car"))
	if len(cars) != 0 {
		t.Errorf("stored %v after a failure", cars)
	}
	assertNoSpool(t, dir)
}

func shapes(t *testing.T, s *ipfstest.Store) map[string]*ipfstest.DAG {
	return map[string]*ipfstest.DAG{
		"single block":       s.File(t, ipfstest.Bytes(1, 1000), ipfstest.FileOptions{RawLeaves: true}),
		"multi-level raw":    s.File(t, ipfstest.Bytes(2, 300_000), ipfstest.FileOptions{ChunkSize: 1024, MaxLinks: 5, RawLeaves: true}),
		"multi-level dag-pb": s.File(t, ipfstest.Bytes(3, 300_000), ipfstest.FileOptions{ChunkSize: 1024, MaxLinks: 5}),
		"duplicate leaves":   s.File(t, make([]byte, 100_000), ipfstest.FileOptions{ChunkSize: 1024, MaxLinks: 5, RawLeaves: true}),
		"nested directories": s.Dir(t, []ipfstest.Entry{{Name: "a.txt", Data: ipfstest.Bytes(4, 10)}, {Name: "sub", Dir: []ipfstest.Entry{{Name: "b", Data: ipfstest.Bytes(5, 50_000)}, {Name: "deeper", Dir: []ipfstest.Entry{{Name: "c", Data: ipfstest.Bytes(6, 3000)}}}}}}, ipfstest.FileOptions{ChunkSize: 4096, RawLeaves: true}, false),
		"HAMT-sharded":       s.Dir(t, ipfstest.Files(400), ipfstest.FileOptions{}, true),
		"dag-cbor":           s.CBOR(t, 8),
	}
}

// Every DAG shape is fetched from boxo's gateway, from the kubo RPC and
// from an origin, and stored as the importer made it.
func TestFetchStoresEveryShape(t *testing.T) {
	e := newEnv(t)
	rpc := ipfstest.NewKuboRPC(t, e.s)
	for name, dag := range shapes(t, e.s) {
		for _, via := range []struct {
			name    string
			cfg     Config
			origins []string
		}{
			{"gateway", Config{Gateways: []string{e.gw.URL}}, nil},
			{"kubo", Config{KuboRPC: []string{rpc.URL}}, nil},
			{"origin", Config{}, []string{"/ip4/127.0.0.1/tcp/4001/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN", e.gw.URL + "/"}},
		} {
			t.Run(name+"/"+via.name, func(t *testing.T) {
				res, err := e.fetcher(via.cfg).Fetch(context.Background(), Request{Root: dag.Root, Origins: via.origins})
				if err != nil {
					t.Fatal(err)
				}
				assertStored(t, e.dir, res, dag)
				if !strings.Contains(res.Source, via.name) && !(via.name == "gateway" && strings.HasPrefix(res.Source, "gateways[0]")) {
					t.Errorf("source %q", res.Source)
				}
			})
		}
	}
}

func TestFetchMissingRootIsNotFound(t *testing.T) {
	e := newEnv(t)
	rpc := ipfstest.NewKuboRPC(t, e.s)
	other := ipfstest.NewStore().File(t, ipfstest.Bytes(9, 5000), ipfstest.FileOptions{})
	_, err := e.fetcher(Config{Gateways: []string{e.gw.URL}}).Fetch(context.Background(), Request{Root: other.Root})
	assertFails(t, e.dir, err, ErrNotFound, "gateways[0]: the CAR holds no block")
	// kubo answers a root it lacks with a 500 before any CAR byte.
	_, err = e.fetcher(Config{KuboRPC: []string{rpc.URL}}).Fetch(context.Background(), Request{Root: other.Root})
	assertFails(t, e.dir, err, ErrNotFound, "kubo[0]: kubo: the DAG is not in its repo")
}

func TestFetchMissingDeepBlockIsNotFound(t *testing.T) {
	e := newEnv(t)
	rpc := ipfstest.NewKuboRPC(t, e.s)
	dag := e.s.File(t, ipfstest.Bytes(2, 300_000), ipfstest.FileOptions{ChunkSize: 1024, MaxLinks: 5, RawLeaves: true})
	gone := dag.Blocks[len(dag.Blocks)/2].Cid()
	e.s.Delete(t, gone)
	_, err := e.fetcher(Config{Gateways: []string{e.gw.URL}}).Fetch(context.Background(), Request{Root: dag.Root})
	assertFails(t, e.dir, err, ErrNotFound, "short of the DAG")
	_, err = e.fetcher(Config{KuboRPC: []string{rpc.URL}}).Fetch(context.Background(), Request{Root: dag.Root})
	assertFails(t, e.dir, err, ErrNotFound, "kubo reported a missing block")
}

func TestFetchCorruptBlockIsInvalid(t *testing.T) {
	e := newEnv(t)
	dag := e.s.File(t, ipfstest.Bytes(2, 300_000), ipfstest.FileOptions{ChunkSize: 1024, MaxLinks: 5, RawLeaves: true})
	bad := dag.Blocks[10].Cid() // a raw leaf: the gateway walks past it
	e.s.Corrupt(t, bad)
	_, err := e.fetcher(Config{Gateways: []string{e.gw.URL}}).Fetch(context.Background(), Request{Root: dag.Root})
	assertFails(t, e.dir, err, ErrInvalid, bad.String()+") at offset")
	assertFails(t, e.dir, err, ErrInvalid, "bytes do not match CID")
}

func TestFetchExtraBlockIsInvalid(t *testing.T) {
	e := newEnv(t)
	dag := e.s.File(t, ipfstest.Bytes(2, 100_000), ipfstest.FileOptions{ChunkSize: 4096, RawLeaves: true})
	extra := ipfstest.NewStore().File(t, ipfstest.Bytes(8, 100), ipfstest.FileOptions{RawLeaves: true})
	e.gw.AppendBlock(extra.Blocks[0])
	_, err := e.fetcher(Config{Gateways: []string{e.gw.URL}}).Fetch(context.Background(), Request{Root: dag.Root})
	assertFails(t, e.dir, err, ErrInvalid, "("+extra.Root.String()+") at offset")
	assertFails(t, e.dir, err, ErrInvalid, "follows the complete DAG")
}

// A CAR whose header names another root, served by an origin that
// answers every CID with one DAG.
func TestFetchWrongRootIsInvalid(t *testing.T) {
	e := newEnv(t)
	served := e.s.File(t, ipfstest.Bytes(2, 10_000), ipfstest.FileOptions{RawLeaves: true})
	asked := ipfstest.NewStore().File(t, ipfstest.Bytes(3, 10_000), ipfstest.FileOptions{RawLeaves: true})
	liar := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, e.gw.URL+"/ipfs/"+served.Root.String()+"?format=car", http.StatusFound)
	}))
	defer liar.Close()
	_, err := e.fetcher(Config{}).Fetch(context.Background(), Request{Root: asked.Root, Origins: []string{liar.URL}})
	assertFails(t, e.dir, err, ErrInvalid, "origins[0]: the CAR header names roots ["+served.Root.String()+"]")
}

func TestFetchTooLargeStopsAtOnce(t *testing.T) {
	e := newEnv(t)
	dag := e.s.File(t, ipfstest.Bytes(2, 300_000), ipfstest.FileOptions{RawLeaves: true})
	second := ipfstest.NewGateway(t, e.s)
	_, err := e.fetcher(Config{Gateways: []string{e.gw.URL, second.URL}, MaxSize: 100_000}).Fetch(context.Background(), Request{Root: dag.Root})
	assertFails(t, e.dir, err, ErrTooLarge, "exceeds the limit of 100000 bytes")
	if n := second.Requests.Load(); n != 0 {
		t.Errorf("the second gateway was asked %d times after too large", n)
	}
}

func TestFetchStallIsUnavailable(t *testing.T) {
	e := newEnv(t)
	dag := e.s.File(t, ipfstest.Bytes(2, 300_000), ipfstest.FileOptions{ChunkSize: 4096, RawLeaves: true})
	e.gw.StallAfter(50_000)
	_, err := e.fetcher(Config{Gateways: []string{e.gw.URL}, StallTimeout: 200 * time.Millisecond}).Fetch(context.Background(), Request{Root: dag.Root})
	assertFails(t, e.dir, err, ErrUnavailable, "stalled: no bytes for 200ms")
	// The per-source timeout ends a source that trickles on.
	_, err = e.fetcher(Config{Gateways: []string{e.gw.URL}, Timeout: 300 * time.Millisecond, StallTimeout: time.Minute}).Fetch(context.Background(), Request{Root: dag.Root})
	assertFails(t, e.dir, err, ErrUnavailable, "fetch timeout of 300ms")
}

func TestFetchRefusedIsUnavailable(t *testing.T) {
	e := newEnv(t)
	dag := e.s.File(t, ipfstest.Bytes(2, 3000), ipfstest.FileOptions{})
	_, err := e.fetcher(Config{Gateways: []string{ipfstest.RefusedURL(t)}}).Fetch(context.Background(), Request{Root: dag.Root})
	assertFails(t, e.dir, err, ErrUnavailable, "gateways[0]: could not connect")
}

// The precedence of failures across sources, and a bad source that does
// not hide a good one.
func TestFetchTriesEverySourceAndDecides(t *testing.T) {
	e := newEnv(t)
	dag := e.s.File(t, ipfstest.Bytes(2, 300_000), ipfstest.FileOptions{ChunkSize: 4096, RawLeaves: true})
	badStore := ipfstest.NewStore()
	badDAG := badStore.File(t, ipfstest.Bytes(2, 300_000), ipfstest.FileOptions{ChunkSize: 4096, RawLeaves: true})
	badStore.Corrupt(t, badDAG.Blocks[3].Cid())
	bad := ipfstest.NewGateway(t, badStore)
	empty := ipfstest.NewGateway(t, ipfstest.NewStore())
	refused := ipfstest.RefusedURL(t)
	ctx := context.Background()

	res, err := e.fetcher(Config{Gateways: []string{refused, bad.URL, empty.URL, e.gw.URL}}).Fetch(ctx, Request{Root: dag.Root})
	if err != nil {
		t.Fatal(err)
	}
	assertStored(t, e.dir, res, dag)
	if !strings.HasPrefix(res.Source, "gateways[3] http://127.0.0.1") {
		t.Errorf("source %q", res.Source)
	}
	os.Remove(filepath.Join(e.dir.Path(), carstore.Name(res.Car)))

	_, err = e.fetcher(Config{Gateways: []string{bad.URL, empty.URL}}).Fetch(ctx, Request{Root: dag.Root})
	assertFails(t, e.dir, err, ErrInvalid, "gateways[0]: block 5 (")
	assertFails(t, e.dir, err, ErrInvalid, "; gateways[1]: the CAR holds no block")
	_, err = e.fetcher(Config{Gateways: []string{bad.URL, refused}}).Fetch(ctx, Request{Root: dag.Root})
	assertFails(t, e.dir, err, ErrUnavailable, "gateways[1]: could not connect")
	_, err = e.fetcher(Config{Gateways: []string{empty.URL, empty.URL + "/"}}).Fetch(ctx, Request{Root: dag.Root})
	assertFails(t, e.dir, err, ErrNotFound, "gateways[1]: the CAR holds no block")
	_, err = e.fetcher(Config{}).Fetch(ctx, Request{Root: dag.Root, Origins: []string{"/dns4/example.com/tcp/4001"}})
	assertFails(t, e.dir, err, ErrUnavailable, "no sources")
	// The default policy refuses loopback: a refused source lacks it.
	f := New(Config{Gateways: []string{e.gw.URL}, Store: e.dir})
	_, err = f.Fetch(ctx, Request{Root: dag.Root})
	assertFails(t, e.dir, err, ErrNotFound, "gateways[0]: ")
}

func TestFetchCancelRemovesTheSpoolFile(t *testing.T) {
	e := newEnv(t)
	dag := e.s.File(t, ipfstest.Bytes(2, 300_000), ipfstest.FileOptions{ChunkSize: 4096, RawLeaves: true})
	e.gw.StallAfter(100_000)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := e.fetcher(Config{Gateways: []string{e.gw.URL}, StallTimeout: time.Minute}).Fetch(ctx, Request{Root: dag.Root})
		done <- err
	}()
	// Wait until the spool file holds the bytes before the stall.
	deadline := time.Now().Add(10 * time.Second)
	for {
		files, _ := filepath.Glob(filepath.Join(e.dir.Path(), ".spool", "*"))
		if len(files) == 1 {
			if fi, err := os.Stat(files[0]); err == nil && fi.Size() >= 100_000 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no spool file filled")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("error %v, want context.Canceled alone", err)
	}
	assertNoSpool(t, e.dir)
}

func TestConcurrentFetchesStoreOneCAR(t *testing.T) {
	e := newEnv(t)
	dag := e.s.File(t, ipfstest.Bytes(2, 2<<20), ipfstest.FileOptions{RawLeaves: true})
	f := e.fetcher(Config{Gateways: []string{e.gw.URL}})
	var wg sync.WaitGroup
	res := make([]*Result, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() { res[i], errs[i] = f.Fetch(context.Background(), Request{Root: dag.Root}) })
	}
	wg.Wait()
	for i := range 2 {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		assertStored(t, e.dir, res[i], dag)
	}
	cars, _ := filepath.Glob(filepath.Join(e.dir.Path(), "*.car"))
	if len(cars) != 1 || !res[0].Car.Equals(res[1].Car) {
		t.Errorf("stored %v for %s and %s", cars, res[0].Car, res[1].Car)
	}
}

// A root whose bytes hash to its CID but are not dag-pb: not a DAG. The
// CAR is written by go-car and served by an origin.
func TestFetchNotADAGIsInvalid(t *testing.T) {
	e := newEnv(t)
	junk := ipfstest.Bytes(11, 500)
	mh, _ := multihash.Sum(junk, multihash.SHA2_256, -1)
	root := cid.NewCidV1(cid.DagProtobuf, mh)
	var buf bytes.Buffer
	w, err := storage.NewWritable(&buf, []cid.Cid{root}, car.WriteAsCarV1(true))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Put(context.Background(), root.KeyString(), junk); err != nil {
		t.Fatal(err)
	}
	if err := w.Finalize(); err != nil {
		t.Fatal(err)
	}
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/vnd.ipld.car; version=1; order=dfs; dups=n")
		w.Write(buf.Bytes())
	}))
	defer origin.Close()
	_, err = e.fetcher(Config{}).Fetch(context.Background(), Request{Root: root, Origins: []string{origin.URL}})
	assertFails(t, e.dir, err, ErrInvalid, "origins[0]: not a DAG: block 1 ("+root.String()+") at offset")
}

// A reason lists at most four sources, each clipped, and counts the rest.
func TestReasonIsBounded(t *testing.T) {
	e := newEnv(t)
	dag := e.s.File(t, ipfstest.Bytes(2, 3000), ipfstest.FileOptions{})
	refused := ipfstest.RefusedURL(t)
	_, err := e.fetcher(Config{Gateways: []string{refused, refused, refused, refused, refused, refused}}).Fetch(context.Background(), Request{Root: dag.Root})
	assertFails(t, e.dir, err, ErrUnavailable, "gateways[3]: could not connect; and 2 more")
	if strings.Contains(Reason(err), "gateways[4]") || strings.Contains(Reason(err), "127.0.0.1") {
		t.Errorf("reason %q lists too much", Reason(err))
	}
}

// kubo's RPC breaking partway reports it in X-Stream-Error: unavailable.
func TestFetchKuboStreamErrorIsUnavailable(t *testing.T) {
	e := newEnv(t)
	rpc := ipfstest.NewKuboRPC(t, e.s)
	dag := e.s.File(t, ipfstest.Bytes(2, 300_000), ipfstest.FileOptions{ChunkSize: 4096, RawLeaves: true})
	rpc.FailAfter(100_000, "context deadline exceeded")
	_, err := e.fetcher(Config{KuboRPC: []string{rpc.URL}}).Fetch(context.Background(), Request{Root: dag.Root})
	assertFails(t, e.dir, err, ErrUnavailable, "kubo[0]: kubo reported an error after")
}

// A gateway that answers dups=y sends a duplicate block again; the walk
// expects it. The origin here asks boxo's gateway for dups=y.
func TestFetchAcceptsDuplicatesWhenTheGatewaySaysSo(t *testing.T) {
	e := newEnv(t)
	dag := e.s.File(t, make([]byte, 100_000), ipfstest.FileOptions{ChunkSize: 1024, MaxLinks: 5, RawLeaves: true})
	dups := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequest(http.MethodGet, e.gw.URL+r.URL.RequestURI(), nil)
		req.Header.Set("Accept", "application/vnd.ipld.car; version=1; order=dfs; dups=y")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		io.Copy(w, resp.Body)
	}))
	defer dups.Close()
	res, err := e.fetcher(Config{}).Fetch(context.Background(), Request{Root: dag.Root, Origins: []string{dups.URL}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Blocks <= len(dag.Blocks) {
		t.Fatalf("%d blocks for %d distinct: the gateway sent no duplicates", res.Blocks, len(dag.Blocks))
	}
	// The stored CAR holds the duplicates as served; assertStored counts
	// distinct blocks, so compare those here.
	data, _ := os.ReadFile(filepath.Join(e.dir.Path(), carstore.Name(res.Car)))
	br, err := car.NewBlockReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	distinct := map[cid.Cid]bool{}
	for {
		b, err := br.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if want := dag.Block(b.Cid()); want == nil || !bytes.Equal(want.RawData(), b.RawData()) {
			t.Errorf("block %s is not the importer's", b.Cid())
		}
		distinct[b.Cid()] = true
	}
	if len(distinct) != len(dag.Blocks) {
		t.Errorf("%d distinct blocks, the importer made %d", len(distinct), len(dag.Blocks))
	}
}
