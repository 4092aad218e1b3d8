package carcheck

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ferry-dev/ferry/internal/testutil/rawserve"
	"github.com/ferry-dev/ferry/internal/urlpolicy"
)

// TestFetchRefusesWhatTheFetchPolicyRefuses: with the default options, a
// real server on 127.0.0.1 holding a good CAR is not fetched, nor are the
// other forms of a private target; the refusal is final (Invalid) and the
// reason says what was refused.
func TestFetchRefusesWhatTheFetchPolicyRefuses(t *testing.T) {
	data := makeCAR(t, 20, 10<<10)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.Write(data)
	}))
	t.Cleanup(srv.Close)
	port := srv.URL[strings.LastIndexByte(srv.URL, ':')+1:]
	const hint = ", refused by the fetch policy (--fetch-allow-private)"
	tests := []struct {
		name, url, reason string
	}{
		{"loopback", srv.URL + "/x.car", "urls[0]: 127.0.0.1 is a loopback address" + hint},
		{"IPv6 loopback", "http://[::1]:" + port + "/x.car", "urls[0]: ::1 is a loopback address" + hint},
		{"the metadata service", "http://169.254.169.254/latest/meta-data/", "urls[0]: 169.254.169.254 is a link-local address" + hint},
		{"a decimal IP", "http://2130706433:" + port + "/x.car", `urls[0]: host "2130706433" is not a canonical IP address, refused by the fetch policy`},
		{"userinfo", "http://user:hunter2@" + srv.Listener.Addr().String() + "/x.car", "urls[0]: userinfo (user@ or user:password@) in the URL, refused by the fetch policy"},
		{"a file", "file:///etc/passwd", `urls[0]: scheme "file" is not http or https, refused by the fetch policy`},
		{"gopher", "gopher://" + srv.Listener.Addr().String() + "/_x", `urls[0]: scheme "gopher" is not http or https, refused by the fetch policy`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := FetchAndCheck(context.Background(), []string{tt.url}, FetchOptions{}, CheckOptions{})
			fe, ok := errors.AsType[*FetchError](err)
			if !ok || !errors.Is(err, urlpolicy.ErrRefused) || !fe.Invalid() {
				t.Fatalf("err %v, want a final refusal", err)
			}
			if got := fe.Reason(); got != tt.reason {
				t.Fatalf("reason %q, want %q", got, tt.reason)
			}
		})
	}
	if hits.Load() != 0 {
		t.Fatalf("the server was reached %d times", hits.Load())
	}
	res, err := FetchAndCheck(context.Background(), []string{srv.URL + "/x.car"}, FetchOptions{Policy: local}, CheckOptions{})
	if err != nil || res.Size != uint64(len(data)) {
		t.Fatalf("with AllowPrivate: %+v, %v", res, err)
	}
}

// TestReasonsQuoteNothingTheSourceSent: where the policy lets a fetch
// through, its reason says what ferry concluded, not what the source
// said: not the banner of a service that is not HTTP, not an HTTP status
// line's text, not the values of a header that does not decode.
func TestReasonsQuoteNothingTheSourceSent(t *testing.T) {
	closed := rawserve.Start(t, "")
	tlsSrv := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(tlsSrv.Close)
	tests := []struct {
		name, url, reason string
	}{
		{"a service that is not HTTP", rawserve.Start(t, "SSH-2.0-OpenSSH_9.6 hunter2\r\n"), "urls[0]: no valid HTTP response"},
		{"a status line with its own text", rawserve.Start(t, "HTTP/1.1 418 hunter2\r\nContent-Length: 0\r\n\r\n"), "urls[0]: HTTP 418 I'm a teapot"},
		{"a CAR header with a string for its version", rawserve.Start(t, "HTTP/1.1 200 OK\r\nContent-Length: 31\r\n\r\n\x1e\xa2eroots\x80gversionmhunter2hunter"), "urls[0]: invalid CAR: header at offset 0: not a CAR header"},
		{"a closed connection", closed, "urls[0]: no valid HTTP response"},
		{"nothing listening", "http://127.0.0.1:1/x.car", "urls[0]: could not connect"},
		{"a certificate no one signed", tlsSrv.URL + "/x.car", "urls[0]: TLS certificate not valid for the host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := FetchAndCheck(context.Background(), []string{tt.url}, FetchOptions{Policy: local}, CheckOptions{})
			fe, ok := errors.AsType[*FetchError](err)
			if !ok {
				t.Fatalf("err %v, want a FetchError", err)
			}
			if got := fe.Reason(); got != tt.reason {
				t.Fatalf("reason %q, want %q (error: %v)", got, tt.reason, err)
			}
		})
	}
}

func TestAReasonIsBoundedHoweverManySources(t *testing.T) {
	var urls []string
	for i := range 50 {
		urls = append(urls, fmt.Sprintf("http://127.0.0.%d:%d/%s.car", i+1, 1000+i, strings.Repeat("x", 1000)))
	}
	_, err := FetchAndCheck(context.Background(), urls, FetchOptions{}, CheckOptions{})
	fe, ok := errors.AsType[*FetchError](err)
	if !ok {
		t.Fatalf("err %v", err)
	}
	got := fe.Reason()
	if len(got) > 1024 || !strings.HasPrefix(got, "all 50 sources failed: urls[0]: 127.0.0.1 is a loopback address") ||
		!strings.HasSuffix(got, "; and 46 more") || strings.Contains(got, "xxx") {
		t.Fatalf("reason of %d bytes: %q", len(got), got)
	}
}
