//go:build s3

// The S3 store against a real S3-compatible server, SeaweedFS, that the
// test starts on loopback: `make s3-test` builds it (scripts/s3server.sh)
// and passes its path in FERRY_S3_SERVER.

package carstore_test

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/ferry-dev/ferry/carstore"
	"github.com/ferry-dev/ferry/internal/s3test"
	"github.com/ferry-dev/ferry/internal/testutil"
)

// openS3 opens the store the way ferry does, from a --car-store spec and
// the environment's credentials.
func openS3(t *testing.T, endpoint, prefix string) carstore.Store {
	t.Helper()
	t.Setenv("AWS_ACCESS_KEY_ID", s3test.Key)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3test.Secret)
	spec := "s3://" + s3test.Bucket + "/" + prefix + "?endpoint=" + endpoint + "&secure=false&spool=" + t.TempDir()
	s, err := carstore.Open(spec, "")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestS3(t *testing.T) {
	endpoint := s3test.Start(t)

	t.Run("contract", func(t *testing.T) {
		s := openS3(t, endpoint, "pins")
		testContract(t, s)
		c := testutil.MakeCAR(t, 1, 3<<20)
		want := "http://" + endpoint + "/" + s3test.Bucket + "/pins/" + carstore.Name(c.CID)
		if got := s.URL(c.CID); got != want {
			t.Fatalf("URL %q, want %q", got, want)
		}
		if strings.Contains(s.URL(c.CID), s3test.Key) || strings.Contains(s.URL(c.CID), s3test.Secret) {
			t.Fatal("URL carries the credentials")
		}
	})

	t.Run("multipart", func(t *testing.T) {
		// Over minio-go's 16 MiB part size, so Put uploads in parts.
		s := openS3(t, endpoint, "big")
		c := testutil.MakeCAR(t, 7, 70<<20)
		f := spool(t, s, c.Bytes)
		if err := s.Put(context.Background(), c.CID, f); err != nil {
			t.Fatal(err)
		}
		gone(t, f)
		stored(t, s, c.CID, c.Bytes)
		resp, err := http.Head(s.URL(c.CID))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		// A multipart object's ETag is "<md5 of part md5s>-<parts>".
		if etag := resp.Header.Get("ETag"); !strings.Contains(etag, "-") {
			t.Fatalf("ETag %s: not a multipart upload", etag)
		}
	})

	t.Run("missing bucket", func(t *testing.T) {
		_, err := carstore.OpenS3(context.Background(), carstore.S3Config{Endpoint: endpoint, Bucket: "nobucket",
			AccessKey: s3test.Key, SecretKey: s3test.Secret, SpoolDir: t.TempDir()})
		if err == nil {
			t.Fatal("opened a bucket that does not exist")
		}
	})

	t.Run("wrong secret", func(t *testing.T) {
		_, err := carstore.OpenS3(context.Background(), carstore.S3Config{Endpoint: endpoint, Bucket: s3test.Bucket,
			AccessKey: s3test.Key, SecretKey: "wrong" + s3test.Secret, SpoolDir: t.TempDir()})
		if err == nil {
			t.Fatal("opened the bucket with a wrong secret")
		}
		if bytes.Contains([]byte(err.Error()), []byte(s3test.Secret)) {
			t.Fatalf("error carries the secret: %v", err)
		}
	})
}
