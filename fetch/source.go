package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/ferry-dev/ferry/carcheck"
	"github.com/ferry-dev/ferry/internal/urlpolicy"
	"github.com/ipfs/go-cid"
)

// carAccept is what a Trustless Gateway is asked for: a CARv1 in
// depth-first order without duplicate blocks, the order the verifier
// walks. A gateway may answer dups=y; the verifier then expects them.
const carAccept = "application/vnd.ipld.car; version=1; order=dfs; dups=n"

type sourceKind int

const (
	gatewaySource sourceKind = iota // a Trustless Gateway
	kuboSource                      // kubo's RPC API
)

// source is one place to fetch from, named for reasons by its list and
// index ("origins[0]") rather than its URL, which may carry a secret.
type source struct {
	kind sourceKind
	base string
	name string
}

// sources lists, in order, the request's http(s) origins (multiaddrs are
// not dialed), the configured gateways, then the kubo RPC APIs.
func (f *Fetcher) sources(origins []string) []source {
	var out []source
	for i, o := range origins {
		if strings.HasPrefix(o, "http://") || strings.HasPrefix(o, "https://") {
			out = append(out, source{gatewaySource, o, fmt.Sprintf("origins[%d]", i)})
		}
	}
	for i, g := range f.cfg.Gateways {
		out = append(out, source{gatewaySource, g, fmt.Sprintf("gateways[%d]", i)})
	}
	for i, k := range f.cfg.KuboRPC {
		out = append(out, source{kuboSource, k, fmt.Sprintf("kubo[%d]", i)})
	}
	return out
}

// request is the HTTP request for root at src.
func (src source) request(root cid.Cid) (*http.Request, error) {
	base := strings.TrimSuffix(src.base, "/")
	if src.kind == kuboSource {
		return http.NewRequest(http.MethodPost, base+"/api/v0/dag/export?arg="+root.String()+"&progress=false", nil)
	}
	req, err := http.NewRequest(http.MethodGet, base+"/ipfs/"+root.String()+"?format=car", nil)
	if err == nil {
		req.Header.Set("Accept", carAccept)
	}
	return req, err
}

// label is the source as Result.Source shows it: its URL without
// userinfo, query or fragment.
func (src source) label() string {
	u, err := url.Parse(src.base)
	if err != nil {
		return src.name
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return src.name + " " + u.String()
}

func (f *Fetcher) policy() *urlpolicy.Policy {
	if f.cfg.Policy != nil {
		return f.cfg.Policy
	}
	return urlpolicy.Default
}

// attempt fetches root from one source into a spool file, verifying as
// it streams, and stores the CAR when it is complete. On any failure the
// spool file is discarded.
func (f *Fetcher) attempt(ctx context.Context, src source, root cid.Cid) (*Result, *failure) {
	req, err := src.request(root)
	if err != nil {
		return nil, &failure{kind: ErrNotFound, reason: "not a valid URL"}
	}
	actx, cancel := carcheck.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	spool, err := f.cfg.Store.Spool()
	if err != nil {
		return nil, &failure{kind: ErrUnavailable, reason: "no spool file: " + err.Error()}
	}
	var res *carcheck.Result
	var fl *failure
	err = carcheck.Do(actx, f.policy(), f.cfg.StallTimeout, req, func(resp *http.Response) error {
		res, fl = f.stream(actx, src, root, resp, spool)
		return nil
	})
	if err != nil {
		fl = transportFailure(err)
		if src.kind == kuboSource && kuboLacks(err) {
			fl = &failure{kind: ErrNotFound, reason: "kubo: the DAG is not in its repo (HTTP 500, block not found)"}
		}
	}
	if fl != nil {
		f.cfg.Store.Discard(spool)
		return nil, fl
	}
	if err := f.cfg.Store.Put(ctx, res.CAR, spool); err != nil {
		return nil, &failure{kind: ErrUnavailable, reason: "storing the CAR failed"}
	}
	return &Result{
		Car: res.CAR, Size: res.Size, MD5: res.MD5, Commitment: res.Commitment,
		Blocks: res.Blocks, URL: f.cfg.Store.URL(res.CAR), Source: src.label(),
	}, nil
}

// stream reads one response: its bytes go to the spool file, then once
// through carcheck's scanner and hashers (each block hashed against its
// CID, the CAR CID, md5, commP) and, block by block, the DAG walk.
func (f *Fetcher) stream(ctx context.Context, src source, root cid.Cid, resp *http.Response, spool *os.File) (*carcheck.Result, *failure) {
	dups := false
	if src.kind == gatewaySource {
		_, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		if params["order"] == "unk" {
			return nil, &failure{kind: ErrInvalid, reason: "the gateway answered a CAR in unknown block order, which cannot be verified as it streams"}
		}
		dups = params["dups"] == "y"
	}
	if resp.ContentLength > 0 && uint64(resp.ContentLength) > f.cfg.MaxSize {
		return nil, &failure{kind: ErrTooLarge, reason: fmt.Sprintf("announced size %d exceeds the limit of %d bytes", resp.ContentLength, f.cfg.MaxSize)}
	}
	v := newVerifier(ctx, root, dups, spool)
	res, err := carcheck.Check(io.TeeReader(resp.Body, &spoolWriter{f: spool}), carcheck.CheckOptions{
		MaxSize: f.cfg.MaxSize, CARCID: true, OnRoots: v.onRoots, OnBlock: v.onBlock,
	})
	werr := v.end()
	if src.kind == kuboSource {
		// kubo streams a 200 and tells of a failure only in the trailer,
		// there once the body has been read to its end.
		if msg := resp.Trailer.Get("X-Stream-Error"); msg != "" && (err == nil || werr != nil) {
			if strings.Contains(msg, "not found") || strings.Contains(msg, "could not find") {
				return nil, &failure{kind: ErrNotFound, reason: fmt.Sprintf("kubo reported a missing block after %d blocks", v.blocks)}
			}
			return nil, &failure{kind: ErrUnavailable, reason: fmt.Sprintf("kubo reported an error after %d blocks", v.blocks)}
		}
	}
	if err != nil {
		if rctx := resp.Request.Context(); rctx.Err() != nil {
			// A stall or the timeout ended the read: say which.
			return nil, transportFailure(context.Cause(rctx))
		}
		if v.hookErr != nil && err == v.hookErr {
			return nil, v.verdict(err)
		}
		return nil, checkVerdict(err, v.blocks, f.cfg.MaxSize)
	}
	if res.Blocks == 0 {
		return nil, &failure{kind: ErrNotFound, reason: "the CAR holds no block: the source lacks the root"}
	}
	if fl := v.verdict(werr); fl != nil {
		return nil, fl
	}
	return res, nil
}

// kuboLacks says whether err is kubo's RPC answer to a DAG it does not
// have: offline, or after its own search gave up, dag export answers 500
// with a JSON message "block was not found locally (offline): ipld: could
// not find <cid>" before it streams anything.
func kuboLacks(err error) bool {
	se, ok := errors.AsType[*carcheck.StatusError](err)
	return ok && se.Code == http.StatusInternalServerError &&
		(strings.Contains(se.Body, "not found") || strings.Contains(se.Body, "could not find"))
}

// transportFailure classifies a failure to get a response or read it.
func transportFailure(err error) *failure {
	reason := carcheck.Describe(err)
	if errors.Is(err, urlpolicy.ErrRefused) {
		// The policy will refuse it next time too; another source may
		// serve the DAG, and this one counts as not having it.
		return &failure{kind: ErrNotFound, reason: reason}
	}
	if se, ok := errors.AsType[*carcheck.StatusError](err); ok {
		switch c := se.Code; {
		case c >= 500, c == http.StatusTooManyRequests, c == http.StatusRequestTimeout:
			return &failure{kind: ErrUnavailable, reason: reason}
		default: // 404, 410 and other refusals of this request
			return &failure{kind: ErrNotFound, reason: reason}
		}
	}
	return &failure{kind: ErrUnavailable, reason: reason}
}
