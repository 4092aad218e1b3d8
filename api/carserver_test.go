package api

import (
	"crypto/md5"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/ferry-dev/ferry/internal/testutil"
)

func TestCarServerServesOnlyFilesInItsDir(t *testing.T) {
	dir := t.TempDir()
	car := testutil.MakeCAR(t, 1, 20<<10)
	name := filepath.Base(car.WriteTo(t, dir))
	os.WriteFile(filepath.Join(dir, ".hidden"), []byte("x"), 0o644)
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "sub", "a.car"), []byte("x"), 0o644)
	outside := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(outside, []byte("secret"), 0o644)
	os.Symlink(outside, filepath.Join(dir, "escape.car"))
	srv := httptest.NewServer(CarServer(dir))
	t.Cleanup(srv.Close)

	resp, err := http.Get(srv.URL + "/" + name)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	sum := md5.Sum(body)
	if resp.StatusCode != http.StatusOK || hex.EncodeToString(sum[:]) != car.MD5 || resp.Header.Get("Content-Type") != "application/vnd.ipld.car" {
		t.Fatalf("GET the CAR: %s, %d bytes, %s", resp.Status, len(body), resp.Header.Get("Content-Type"))
	}
	for _, path := range []string{"/", "/missing.car", "/.hidden", "/sub", "/sub/a.car", "/../" + filepath.Base(outside), "/escape.car"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("GET %s: %s, want 404", path, resp.Status)
		}
	}
}

func TestCarServerServesRanges(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Base(testutil.MakeCAR(t, 2, 20<<10).WriteTo(t, dir))
	srv := httptest.NewServer(CarServer(dir))
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/"+name, nil)
	req.Header.Set("Range", "bytes=10-19")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusPartialContent || len(body) != 10 {
		t.Fatalf("range: %s with %d bytes", resp.Status, len(body))
	}
}
