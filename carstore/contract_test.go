package carstore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/ferry-dev/ferry/carstore"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// testContract checks what every Store promises (store.go), with CARs made
// by go-car whose CIDs testutil computed from sha256, and downloads each
// stored CAR from its URL with a plain HTTP client.
func testContract(t *testing.T, s carstore.Store) {
	ctx := context.Background()
	c := testutil.MakeCAR(t, 1, 3<<20)

	t.Run("missing", func(t *testing.T) {
		if _, err := s.Stat(ctx, c.CID); !errors.Is(err, carstore.ErrNotFound) {
			t.Fatalf("Stat of a CAR never stored: %v, want ErrNotFound", err)
		}
		if _, err := s.Open(ctx, c.CID); !errors.Is(err, carstore.ErrNotFound) {
			t.Fatalf("Open of a CAR never stored: %v, want ErrNotFound", err)
		}
	})

	t.Run("put", func(t *testing.T) {
		f := spool(t, s, c.Bytes)
		if err := s.Put(ctx, c.CID, f); err != nil {
			t.Fatal(err)
		}
		gone(t, f)
		stored(t, s, c.CID, c.Bytes)
	})

	t.Run("second put keeps the first", func(t *testing.T) {
		// Other bytes under the same name: a store that overwrote would
		// now serve them.
		f := spool(t, s, []byte("not the CAR"))
		f.Close() // Put takes a closed spool file too
		if err := s.Put(ctx, c.CID, f); err != nil {
			t.Fatal(err)
		}
		gone(t, f)
		stored(t, s, c.CID, c.Bytes)
	})

	t.Run("discard", func(t *testing.T) {
		d := testutil.MakeCAR(t, 2, 64<<10)
		f := spool(t, s, d.Bytes)
		if err := s.Discard(f); err != nil {
			t.Fatal(err)
		}
		gone(t, f)
		if _, err := s.Stat(ctx, d.CID); !errors.Is(err, carstore.ErrNotFound) {
			t.Fatalf("Stat of a discarded CAR: %v, want ErrNotFound", err)
		}
	})

	t.Run("concurrent puts", func(t *testing.T) {
		d := testutil.MakeCAR(t, 3, 1<<20)
		const n = 4
		files := make([]*os.File, n)
		for i := range files {
			files[i] = spool(t, s, d.Bytes)
		}
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i, f := range files {
			wg.Go(func() { errs[i] = s.Put(ctx, d.CID, f) })
		}
		wg.Wait()
		for i, f := range files {
			if errs[i] != nil {
				t.Fatalf("put %d: %v", i, errs[i])
			}
			gone(t, f)
		}
		stored(t, s, d.CID, d.Bytes)
	})
}

// spool writes data to a new spool file of s.
func spool(t *testing.T, s carstore.Store, data []byte) *os.File {
	t.Helper()
	f, err := s.Spool()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	return f
}

// gone checks that a spool file was removed.
func gone(t *testing.T, f *os.File) {
	t.Helper()
	if _, err := os.Stat(f.Name()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("spool file %s still there (%v)", f.Name(), err)
	}
}

// stored checks that s holds want under car, by Stat, Open and its URL,
// and that the bytes hash to car's digest.
func stored(t *testing.T, s carstore.Store, car cid.Cid, want []byte) {
	t.Helper()
	ctx := context.Background()
	size, err := s.Stat(ctx, car)
	if err != nil {
		t.Fatal(err)
	}
	if size != int64(len(want)) {
		t.Fatalf("Stat: %d bytes, want %d", size, len(want))
	}
	r, err := s.Open(ctx, car)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Open: %d bytes differ from the %d stored", len(got), len(want))
	}
	dec, err := multihash.Decode(car.Hash())
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(got); !bytes.Equal(sum[:], dec.Digest) {
		t.Fatalf("sha256 of the stored bytes is not %s's digest", car)
	}

	raw := s.URL(car)
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if u.User != nil || u.RawQuery != "" || !strings.HasSuffix(u.Path, "/"+carstore.Name(car)) {
		t.Fatalf("URL %q: want a plain URL ending /%s, no credentials or query", raw, carstore.Name(car))
	}
	resp, err := http.Get(raw)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, want) {
		t.Fatalf("GET %s: %s, %d bytes; want 200 and the %d stored", raw, resp.Status, len(body), len(want))
	}
}

func TestDirContract(t *testing.T) {
	dir := t.TempDir()
	// What ferry's /cars does for a Dir: serve its files.
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer srv.Close()
	s, err := carstore.OpenDir(dir, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	testContract(t, s)
}
