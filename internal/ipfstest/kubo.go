package ipfstest

import (
	"bytes"
	"errors"
	"fmt"
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
	fail     atomic.Pointer[streamFailure]
}

type streamFailure struct {
	after int64
	msg   string
}

// FailAfter makes every later export stop after n bytes of the CAR and
// report msg in X-Stream-Error, as kubo does when an export breaks
// partway (a timeout, a node shutting down).
func (k *KuboRPC) FailAfter(n int64, msg string) { k.fail.Store(&streamFailure{n, msg}) }

// cutWriter passes the first n bytes and fails after them.
type cutWriter struct {
	w io.Writer
	n int64
}

var errCut = errors.New("ipfstest: export cut")

func (c *cutWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.n {
		n, _ := c.w.Write(p[:c.n])
		c.n -= int64(n)
		return n, errCut
	}
	n, err := c.w.Write(p)
	c.n -= int64(n)
	return n, err
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
		if has, _ := s.Blockstore.Has(r.Context(), root); !has {
			// kubo's answer when the root is not in its repo (offline):
			// an error before any CAR byte.
			http.Error(w, fmt.Sprintf(`{"Message":"block was not found locally (offline): ipld: could not find %s","Code":0,"Type":"error"}`, root), http.StatusInternalServerError)
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
		var out io.Writer = w
		fail := k.fail.Load()
		if fail != nil {
			out = &cutWriter{w: w, n: fail.after}
		}
		if _, err := car.TraverseV1(r.Context(), &ls, root, selectorparse.CommonSelector_ExploreAllRecursively, out); err != nil {
			if errors.Is(err, errCut) {
				err = errors.New(fail.msg)
			}
			w.Header().Set("X-Stream-Error", err.Error())
		}
	})
	k.srv = httptest.NewServer(mux)
	k.URL = k.srv.URL
	t.Cleanup(k.srv.Close)
	return k
}
