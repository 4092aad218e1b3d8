package node

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
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
