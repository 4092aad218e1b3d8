package ipfstest

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"
)

// get fetches url (POST for kubo) and reads the CAR with go-car.
func get(t *testing.T, method, url string) (roots []cid.Cid, got map[cid.Cid][]byte, trailer string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	req.Header.Set("Accept", "application/vnd.ipld.car; version=1; order=dfs; dups=n")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %s: %s", url, resp.Status, body)
	}
	br, err := car.NewBlockReader(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s: go-car: %v", url, err)
	}
	got = map[cid.Cid][]byte{}
	for {
		b, err := br.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return br.Roots, got, resp.Trailer.Get("X-Stream-Error")
		}
		got[b.Cid()] = b.RawData()
	}
	return br.Roots, got, resp.Trailer.Get("X-Stream-Error")
}

// Every builder's DAG comes back whole from the gateway and the kubo RPC,
// as go-car reads it.
func TestServeDAGs(t *testing.T) {
	s := NewStore()
	gw, rpc := NewGateway(t, s), NewKuboRPC(t, s)
	dags := map[string]*DAG{
		"single":      s.File(t, Bytes(1, 1000), FileOptions{}),
		"multilevel":  s.File(t, Bytes(2, 200_000), FileOptions{ChunkSize: 1024, MaxLinks: 4}),
		"dagpbleaves": s.File(t, Bytes(3, 50_000), FileOptions{ChunkSize: 4096, RawLeaves: false}),
		"nested":      s.Dir(t, []Entry{{Name: "a", Data: Bytes(4, 10)}, {Name: "d", Dir: []Entry{{Name: "b", Data: Bytes(5, 5000)}}}}, FileOptions{RawLeaves: true}, false),
		"hamt":        s.Dir(t, Files(300), FileOptions{}, true),
		"cbor":        s.CBOR(t, 5),
	}
	for name, d := range dags {
		for _, src := range []struct{ method, url string }{
			{"GET", gw.URL + "/ipfs/" + d.Root.String() + "?format=car"},
			{"POST", rpc.URL + "/api/v0/dag/export?arg=" + d.Root.String()},
		} {
			roots, got, trailer := get(t, src.method, src.url)
			if len(roots) != 1 || !roots[0].Equals(d.Root) || trailer != "" {
				t.Fatalf("%s %s: roots %v trailer %q", name, src.method, roots, trailer)
			}
			if len(got) != len(d.Blocks) {
				t.Errorf("%s %s: %d blocks, importer made %d", name, src.method, len(got), len(d.Blocks))
			}
			for _, b := range d.Blocks {
				if !bytes.Equal(got[b.Cid()], b.RawData()) {
					t.Errorf("%s %s: block %s differs or is missing", name, src.method, b.Cid())
				}
			}
		}
	}
	if len(dags["hamt"].Blocks) < 300+3 {
		t.Errorf("hamt: %d blocks, want files and several shards", len(dags["hamt"].Blocks))
	}
}

// A block deleted deep in the DAG: the gateway's 200 CAR is short of it,
// the kubo RPC reports it in X-Stream-Error.
func TestMissingBlock(t *testing.T) {
	s := NewStore()
	gw, rpc := NewGateway(t, s), NewKuboRPC(t, s)
	d := s.File(t, Bytes(2, 200_000), FileOptions{ChunkSize: 1024, MaxLinks: 4, RawLeaves: true})
	s.Delete(t, d.Blocks[len(d.Blocks)/2].Cid())
	_, got, _ := get(t, "GET", gw.URL+"/ipfs/"+d.Root.String()+"?format=car")
	if len(got) >= len(d.Blocks) {
		t.Errorf("gateway: %d blocks of %d", len(got), len(d.Blocks))
	}
	_, _, trailer := get(t, "POST", rpc.URL+"/api/v0/dag/export?arg="+d.Root.String())
	if !strings.Contains(trailer, "could not find") {
		t.Errorf("kubo trailer %q", trailer)
	}
}
