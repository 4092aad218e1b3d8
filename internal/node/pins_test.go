package node

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/internal/ipfstest"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/spade"
)

const pinToken = "pin-write-token"

type psaStatus struct {
	RequestID string `json:"requestid"`
	Status    string `json:"status"`
	Created   string `json:"created"`
	Pin       struct {
		CID  string `json:"cid"`
		Name string `json:"name"`
	} `json:"pin"`
	Delegates []string          `json:"delegates"`
	Info      map[string]string `json:"info"`
}

// psa calls the Pinning Service API of n and decodes a 2xx answer into out.
func psa(t *testing.T, n *Node, method, path, token string, body any, out any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+n.HTTPAddr()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, data)
		}
	}
	return resp.StatusCode, data
}

// TestAPinThroughThePinningServiceAPIReachesADeal: POST /psa/pins of a
// DAG boxo's gateway serves is queued, fetched, pinned with its CAR
// named, and the CAR is dealt; a second request of the CID is pinned at
// once without a fetch; the cluster shape answers; DELETE removes one
// request; the pins read model is rebuilt the same from the log.
func TestAPinThroughThePinningServiceAPIReachesADeal(t *testing.T) {
	store := ipfstest.NewStore()
	dag := store.File(t, ipfstest.Bytes(11, 120<<10), ipfstest.FileOptions{ChunkSize: 16 << 10, MaxLinks: 4})
	gw := ipfstest.NewGateway(t, store)
	d := startDealsOn(t, "", 0, spade.SimConfig{Delay: 5 * time.Millisecond}, "", withFetch(10*time.Second, 3, gw.URL),
		func(c *Config) { c.WriteToken = pinToken })
	n, root := d.n, dag.Root.String()

	if code, body := psa(t, n, "POST", "/psa/pins", "", map[string]any{"cid": root}, nil); code != http.StatusUnauthorized ||
		!bytes.Contains(body, []byte(`"reason":"UNAUTHORIZED"`)) {
		t.Fatalf("POST without a token: %d %s, want 401 in the error shape", code, body)
	}
	var first psaStatus
	if code, body := psa(t, n, "POST", "/psa/pins", pinToken, map[string]any{"cid": root, "name": "first", "meta": map[string]string{"app": "e2e"}}, &first); code != http.StatusAccepted {
		t.Fatalf("POST /psa/pins: %d %s", code, body)
	}
	if first.Pin.CID != root || first.RequestID == "" || first.Delegates == nil {
		t.Fatalf("POST answered %+v", first)
	}
	var st psaStatus
	testutil.Eventually(t, 30*time.Second, "pinned", func() bool {
		psa(t, n, "GET", "/psa/pins/"+first.RequestID, pinToken, nil, &st)
		return st.Status == "pinned"
	})
	car := st.Info["car"]
	if car == "" {
		t.Fatalf("a pinned pin names no CAR: %+v", st)
	}
	data, err := os.ReadFile(filepath.Join(n.carDir(), car+".car"))
	if err != nil {
		t.Fatal(err)
	}
	stored, err := testutil.DescribeCAR(data)
	if err != nil || stored.CID.String() != car || st.Info["piece"] != stored.Piece.MustV2().String() {
		t.Fatalf("the pin names CAR %s piece %s; the stored file is %s piece %s (%v)", car, st.Info["piece"], stored.CID, stored.Piece.MustV2(), err)
	}
	d.api.Token = pinToken
	d.cars = append(d.cars, stored)
	d.waitProcessed(t, 60*time.Second)
	psa(t, n, "GET", "/psa/pins/"+first.RequestID, pinToken, nil, &st)
	if st.Info["car_state"] != aggregator.DealProcessed || st.Info["aggregate"] == "" {
		t.Fatalf("a dealt pin's info: %v", st.Info)
	}

	fetches := gw.Requests.Load()
	var second psaStatus
	if code, body := psa(t, n, "POST", "/psa/pins", pinToken, map[string]any{"cid": root, "name": "second"}, &second); code != http.StatusAccepted {
		t.Fatalf("POST again: %d %s", code, body)
	}
	if second.RequestID == first.RequestID || second.Status != "pinned" || second.Info["car"] != car {
		t.Fatalf("the second request of a pinned CID: %+v, want another requestid, pinned at once with the same CAR", second)
	}
	var list struct {
		Count   int         `json:"count"`
		Results []psaStatus `json:"results"`
	}
	psa(t, n, "GET", "/psa/pins?cid="+root, pinToken, nil, &list)
	if list.Count != 2 || list.Results[0].RequestID != second.RequestID {
		t.Fatalf("GET /psa/pins?cid: %+v, want both, newest first", list)
	}
	psa(t, n, "GET", `/psa/pins?meta={"app":"e2e"}&name=FIR&match=ipartial`, pinToken, nil, &list)
	if list.Count != 1 || list.Results[0].RequestID != first.RequestID {
		t.Fatalf("GET /psa/pins by meta and name: %+v", list)
	}
	var cluster struct {
		CID      string            `json:"cid"`
		Metadata map[string]string `json:"metadata"`
		PeerMap  map[string]struct {
			Status string `json:"status"`
		} `json:"peer_map"`
	}
	if code, body := psa(t, n, "GET", "/pins/"+root, pinToken, nil, &cluster); code != http.StatusOK ||
		cluster.PeerMap["ferry"].Status != "pinned" || cluster.Metadata["car"] != car {
		t.Fatalf("GET /pins/%s: %d %s", root, code, body)
	}

	if code, _ := psa(t, n, "DELETE", "/psa/pins/"+first.RequestID, pinToken, nil, nil); code != http.StatusAccepted {
		t.Fatalf("DELETE: %d", code)
	}
	if code, body := psa(t, n, "GET", "/psa/pins/"+first.RequestID, pinToken, nil, nil); code != http.StatusNotFound ||
		!bytes.Contains(body, []byte(`"reason":"NOT_FOUND"`)) {
		t.Fatalf("GET of a deleted pin: %d %s", code, body)
	}
	if got := gw.Requests.Load(); got != fetches {
		t.Fatalf("the gateway was asked %d more times after the CID was pinned", got-fetches)
	}

	for _, bad := range []struct {
		path string
		body any
	}{
		{"/psa/pins", map[string]any{"cid": "not-a-cid"}},
		{"/psa/pins", map[string]any{"cid": root, "name": string(bytes.Repeat([]byte("n"), 256))}},
		{"/psa/pins", map[string]any{"cid": root, "origins": make([]string, 21)}},
	} {
		if code, body := psa(t, n, "POST", bad.path, pinToken, bad.body, nil); code != http.StatusBadRequest ||
			!bytes.Contains(body, []byte(`"details"`)) {
			t.Fatalf("POST %v: %d %s, want 400 in the error shape", bad.body, code, body)
		}
	}
	for _, q := range []string{"limit=0", "limit=1001", "status=done", "match=fuzzy&name=x", "cid=" + root + ",x"} {
		if code, _ := psa(t, n, "GET", "/psa/pins?"+q, pinToken, nil, nil); code != http.StatusBadRequest {
			t.Fatalf("GET /psa/pins?%s: %d, want 400", q, code)
		}
	}
}

// TestThePinningServiceAPIListsReplacesAndTakesClusterPins: every filter
// of GET /psa/pins over pinned and failed pins, a wrong token, replace
// through POST /psa/pins/{requestid}, and ipfs-cluster's POST /pins/{cid}.
func TestThePinningServiceAPIListsReplacesAndTakesClusterPins(t *testing.T) {
	store := ipfstest.NewStore()
	a := store.File(t, ipfstest.Bytes(21, 30<<10), ipfstest.FileOptions{})
	b := store.File(t, ipfstest.Bytes(22, 30<<10), ipfstest.FileOptions{})
	c := store.File(t, ipfstest.Bytes(23, 30<<10), ipfstest.FileOptions{})
	lost := ipfstest.NewStore().File(t, ipfstest.Bytes(24, 3000), ipfstest.FileOptions{}) // no source has it
	gw := ipfstest.NewGateway(t, store)
	cfg := testConfig(t.TempDir(), "")
	withFetch(time.Second, 3, gw.URL)(&cfg)
	cfg.WriteToken = pinToken
	n := startNode(t, cfg)

	if code, body := psa(t, n, "GET", "/psa/pins", "wrong", nil, nil); code != http.StatusUnauthorized ||
		!bytes.Contains(body, []byte(`"reason":"UNAUTHORIZED"`)) {
		t.Fatalf("a wrong token: %d %s", code, body)
	}
	pin := func(cid, name string) psaStatus {
		t.Helper()
		var st psaStatus
		if code, body := psa(t, n, "POST", "/psa/pins", pinToken, map[string]any{"cid": cid, "name": name}, &st); code != http.StatusAccepted {
			t.Fatalf("POST %s: %d %s", cid, code, body)
		}
		return st
	}
	wait := func(id, status string) psaStatus {
		t.Helper()
		var st psaStatus
		testutil.Eventually(t, 30*time.Second, id+" "+status, func() bool {
			psa(t, n, "GET", "/psa/pins/"+id, pinToken, nil, &st)
			return st.Status == status
		})
		return st
	}
	pa := wait(pin(a.Root.String(), "Photos 2026").RequestID, "pinned")
	pb := wait(pin(b.Root.String(), "photos").RequestID, "pinned")
	pl := wait(pin(lost.Root.String(), "lost").RequestID, "failed")
	if !strings.Contains(pl.Info["status_details"], "not found at any source") {
		t.Fatalf("the lost pin failed with %v", pl.Info)
	}

	list := func(q string) (int, []string) {
		t.Helper()
		var l struct {
			Count   int         `json:"count"`
			Results []psaStatus `json:"results"`
		}
		if code, body := psa(t, n, "GET", "/psa/pins?"+q, pinToken, nil, &l); code != http.StatusOK {
			t.Fatalf("GET /psa/pins?%s: %d %s", q, code, body)
		}
		var ids []string
		for _, r := range l.Results {
			ids = append(ids, r.RequestID)
		}
		return l.Count, ids
	}
	for _, c := range []struct {
		q     string
		count int
		ids   []string
	}{
		{"", 2, []string{pb.RequestID, pa.RequestID}}, // status defaults to pinned; newest first
		{"status=pinned,failed", 3, []string{pl.RequestID, pb.RequestID, pa.RequestID}},
		{"status=failed", 1, []string{pl.RequestID}},
		{"limit=1", 2, []string{pb.RequestID}},
		{"limit=1000", 2, []string{pb.RequestID, pa.RequestID}},
		{"name=photos", 1, []string{pb.RequestID}},
		{"name=photos&match=exact", 1, []string{pb.RequestID}},
		{"name=PHOTOS&match=iexact", 1, []string{pb.RequestID}},
		{"name=hotos&match=partial", 2, []string{pb.RequestID, pa.RequestID}},
		{"name=PHOTOS%202&match=ipartial", 1, []string{pa.RequestID}},
		{"before=" + url.QueryEscape(pb.Created), 1, []string{pa.RequestID}},
		{"after=" + url.QueryEscape(pa.Created), 1, []string{pb.RequestID}},
	} {
		count, ids := list(c.q)
		if count != c.count || !slices.Equal(ids, c.ids) {
			t.Errorf("GET /psa/pins?%s: count %d %v, want %d %v", c.q, count, ids, c.count, c.ids)
		}
	}

	// Replace: a new request for the new Pin, the old one gone.
	var re psaStatus
	if code, body := psa(t, n, "POST", "/psa/pins/"+pa.RequestID, pinToken, map[string]any{"cid": b.Root.String(), "name": "moved"}, &re); code != http.StatusAccepted {
		t.Fatalf("replace: %d %s", code, body)
	}
	if re.RequestID == pa.RequestID || re.Pin.CID != b.Root.String() || re.Status != "pinned" {
		t.Fatalf("replace answered %+v", re)
	}
	if code, _ := psa(t, n, "GET", "/psa/pins/"+pa.RequestID, pinToken, nil, nil); code != http.StatusNotFound {
		t.Fatalf("the replaced request: %d, want 404", code)
	}
	if code, _ := psa(t, n, "POST", "/psa/pins/"+pa.RequestID, pinToken, map[string]any{"cid": b.Root.String()}, nil); code != http.StatusNotFound {
		t.Fatalf("replacing a gone request: %d, want 404", code)
	}

	// ipfs-cluster's POST /pins/{cid}: one request per CID however often.
	type peer struct {
		Status string `json:"status"`
	}
	var info struct {
		CID      string            `json:"cid"`
		Name     string            `json:"name"`
		Metadata map[string]string `json:"metadata"`
		PeerMap  map[string]peer   `json:"peer_map"`
	}
	root := c.Root.String()
	for range 2 {
		if code, body := psa(t, n, "POST", "/pins/"+root+"?name=cluster", pinToken, nil, &info); code != http.StatusOK || info.CID != root || info.Name != "cluster" {
			t.Fatalf("POST /pins/%s: %d %s", root, code, body)
		}
	}
	testutil.Eventually(t, 30*time.Second, "the cluster pin pinned", func() bool {
		psa(t, n, "GET", "/pins/"+root, pinToken, nil, &info)
		return info.PeerMap["ferry"].Status == "pinned" && info.Metadata["car"] != ""
	})
	if count, _ := list("cid=" + root); count != 1 {
		t.Fatalf("two cluster POSTs of one CID made %d requests, want 1", count)
	}
}
