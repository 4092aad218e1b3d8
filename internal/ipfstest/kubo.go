package ipfstest

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/ipfs/go-cid"
	car "github.com/ipld/go-car/v2"
	_ "github.com/ipld/go-codec-dagpb"
	_ "github.com/ipld/go-ipld-prime/codec/dagcbor" // codecs of the DAGs it walks
	_ "github.com/ipld/go-ipld-prime/codec/raw"
	"github.com/ipld/go-ipld-prime/datamodel"
	"github.com/ipld/go-ipld-prime/linking"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	selectorparse "github.com/ipld/go-ipld-prime/traversal/selector/parse"
)

// KuboRPC answers kubo's `POST /api/v0/dag/export?arg={cid}` from a Store,
// on 127.0.0.1:0, as kubo does: a 200 that streams the CAR (go-car's
// writer, each block once, depth first) and, when the export fails
// partway, ends the stream with the error in the X-Stream-Error trailer.
type KuboRPC struct {
	URL string
	srv *httptest.Server
	// Requests counts the requests served.
	Requests atomic.Int64
}

// NewKuboRPC serves s until the test ends.
func NewKuboRPC(t testing.TB, s *Store) *KuboRPC {
	t.Helper()
	k := &KuboRPC{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v0/dag/export", func(w http.ResponseWriter, r *http.Request) {
		k.Requests.Add(1)
		root, err := cid.Decode(r.URL.Query().Get("arg"))
		if err != nil {
			http.Error(w, `{"Message":"invalid path","Code":0,"Type":"error"}`, http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/vnd.ipld.car")
		w.Header().Set("Trailer", "X-Stream-Error")
		w.WriteHeader(http.StatusOK)
		ls := cidlink.DefaultLinkSystem()
		ls.StorageReadOpener = func(lc linking.LinkContext, l datamodel.Link) (io.Reader, error) {
			b, err := s.Blockstore.Get(lc.Ctx, l.(cidlink.Link).Cid)
			if err != nil {
				return nil, err
			}
			return bytes.NewReader(b.RawData()), nil
		}
		if _, err := car.TraverseV1(r.Context(), &ls, root, selectorparse.CommonSelector_ExploreAllRecursively, w); err != nil {
			w.Header().Set("X-Stream-Error", err.Error())
		}
	})
	k.srv = httptest.NewServer(mux)
	k.URL = k.srv.URL
	t.Cleanup(k.srv.Close)
	return k
}
