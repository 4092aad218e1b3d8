package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/carcheck"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/internal/urlpolicy"
	car "github.com/ipld/go-car/v2"
)

func writeTemp(t *testing.T, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "x.car")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// commpOut runs runCommp and returns its stdout, failing on an error or
// on anything written to stderr (which is not a terminal here).
func commpOut(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if err := runCommp(context.Background(), args, bytes.NewReader(stdin), &stdout, &stderr); err != nil {
		t.Fatalf("commp %v: %v", args, err)
	}
	if stderr.Len() > 0 {
		t.Fatalf("stderr: %q", stderr.String())
	}
	return stdout.String()
}

func TestCommpPrintsTheFactsOfACAR(t *testing.T) {
	c := testutil.MakeCAR(t, 1, 300<<10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "x.car", time.Time{}, bytes.NewReader(c.Bytes))
	}))
	defer srv.Close()
	path := writeTemp(t, c.Bytes)
	want := "piece-cid: " + c.Piece.MustV2().String() + "\n" +
		"piece-cid-v1: " + c.Piece.V1().String() + "\n" +
		"padded-size: " + itoa(c.Piece.Padded) + "\n" +
		"payload-size: " + itoa(uint64(len(c.Bytes))) + "\n" +
		"md5: " + c.MD5 + "\n"
	tests := []struct {
		name  string
		stdin []byte
		args  []string
	}{
		{"a file path is read from disk", nil, []string{path}},
		{"a dash reads stdin", c.Bytes, []string{"-"}},
		{"an http URL on loopback is fetched with --fetch-allow-private", nil, []string{"--fetch-allow-private", srv.URL + "/x.car"}},
		{"an http URL on loopback is fetched when --fetch-allow names it", nil, []string{"--fetch-allow", "10.0.0.0/8," + srv.Listener.Addr().String(), srv.URL + "/x.car"}},
		{"a file URL is read as a FILE", nil, []string{"file://" + path}},
		{"matching expectations pass", nil, []string{"--expect-md5", c.MD5, "--expect-size", itoa(uint64(len(c.Bytes))), "--max-size", "1MiB", path}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := commpOut(t, tt.stdin, tt.args...)
			if !strings.HasPrefix(out, want) {
				t.Fatalf("output:\n%s\nwant it to begin:\n%s", out, want)
			}
			if !strings.Contains(out, "\nroot: "+rootOf(t, c.Bytes)+"\n") {
				t.Fatalf("output lacks the root:\n%s", out)
			}
		})
	}
}

func TestCommpJSONIsKeyedLikeAnEvent(t *testing.T) {
	c := testutil.MakeCAR(t, 2, 100<<10)
	var got commpOutput
	if err := json.Unmarshal([]byte(commpOut(t, nil, "--json", writeTemp(t, c.Bytes))), &got); err != nil {
		t.Fatal(err)
	}
	want := commpOutput{
		Piece: c.Piece.MustV2().String(), PieceV1: c.Piece.V1().String(), PieceSize: c.Piece.Padded,
		Size: uint64(len(c.Bytes)), MD5: c.MD5, Blocks: got.Blocks, Roots: []string{rootOf(t, c.Bytes)},
	}
	if got.Blocks == 0 || fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
		t.Fatalf("got %+v,\nwant %+v", got, want)
	}
}

func TestCommpFailsWithTheReason(t *testing.T) {
	c := testutil.MakeCAR(t, 3, 100<<10)
	bad := bytes.Clone(c.Bytes)
	bad[len(bad)-1] ^= 1
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(c.Bytes) }))
	defer srv.Close()
	tests := []struct {
		name   string
		args   []string
		is     error
		reason string
	}{
		{"a corrupt CAR is invalid and says which block", []string{writeTemp(t, bad)}, carcheck.ErrBlockMismatch, "bytes do not match CID"},
		{"a corrupt CAR at a URL says so without a list of sources", []string{"file://" + writeTemp(t, bad)}, carcheck.ErrBlockMismatch, "commp file://"},
		{"a URL on loopback is refused by the fetch policy", []string{srv.URL + "/x.car"}, urlpolicy.ErrRefused,
			"commp " + srv.URL + "/x.car: 127.0.0.1 is a loopback address, refused by the fetch policy (--fetch-allow-private)"},
		{"a URL with userinfo is refused even with --fetch-allow-private", []string{"--fetch-allow-private", "http://u:p@" + srv.Listener.Addr().String() + "/x.car"},
			urlpolicy.ErrRefused, "userinfo"},
		{"a bad --fetch-allow is a usage error", []string{"--fetch-allow", "localhost", srv.URL + "/x.car"}, errUsage, "--fetch-allow"},
		{"a wrong md5 is invalid", []string{"--expect-md5", strings.Repeat("a", 32), writeTemp(t, c.Bytes)}, carcheck.ErrMD5Mismatch, "does not match expected"},
		{"a missing file is an I/O error", []string{filepath.Join(t.TempDir(), "none.car")}, os.ErrNotExist, "no such file"},
		{"no argument is a usage error", nil, errUsage, "one FILE, URL or -"},
		{"two arguments are a usage error", []string{"a", "b"}, errUsage, "one FILE, URL or -"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := runCommp(context.Background(), tt.args, nil, &stdout, &stderr)
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("err %v, want %v containing %q", err, tt.is, tt.reason)
			}
			if stdout.Len() > 0 {
				t.Fatalf("stdout on failure: %q", stdout.String())
			}
		})
	}
}

func TestCommpProgressLine(t *testing.T) {
	var buf bytes.Buffer
	if p := startProgress(&buf, 1<<30, time.Millisecond); p.out != nil {
		t.Fatal("progress drawn on a writer that is not a terminal")
	}
	p := &progressLine{out: &buf, total: 200 << 20, start: time.Now().Add(-time.Second)}
	p.n.Store(100 << 20)
	p.draw()
	if got := buf.String(); !strings.Contains(got, "commp: 100 MiB of 200 MiB (50%)") {
		t.Fatalf("progress line %q", got)
	}
	buf.Reset()
	p = &progressLine{out: &buf, total: -1, start: time.Now()}
	p.n.Store(progressMin)
	if p.draw(); buf.Len() > 0 {
		t.Fatalf("progress drawn for a small input of unknown size: %q", buf.String())
	}
}

func itoa(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// rootOf reads a CAR's first root with go-car.
func rootOf(t *testing.T, data []byte) string {
	t.Helper()
	br, err := car.NewBlockReader(bytes.NewReader(data))
	if err != nil || len(br.Roots) == 0 {
		t.Fatalf("roots: %v", err)
	}
	return br.Roots[0].String()
}

func TestFerryRunsCommp(t *testing.T) {
	c := testutil.MakeCAR(t, 4, 10<<10)
	var stdout, stderr bytes.Buffer
	if err := Run(context.Background(), []string{"commp", writeTemp(t, c.Bytes)}, nil, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), c.Piece.V1().String()) {
		t.Fatalf("stdout %q lacks the piece CID", stdout.String())
	}
}
