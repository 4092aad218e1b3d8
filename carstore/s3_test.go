//go:build s3

// The S3 store against a real S3-compatible server, SeaweedFS, that the
// test starts on loopback: `make s3-test` builds it (scripts/s3server.sh)
// and passes its path in FERRY_S3_SERVER.

package carstore_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/carstore"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

const (
	s3Key    = "ferrytestkey"
	s3Secret = "ferrytestsecret0123456789"
	s3Bucket = "cars"
)

// startS3 starts SeaweedFS's S3 gateway (with its master, volume and filer
// servers) in a temp dir, creates the bucket with a public-read policy,
// and returns the S3 endpoint.
func startS3(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("FERRY_S3_SERVER")
	if bin == "" {
		t.Fatal("FERRY_S3_SERVER is not set: run `make s3-test`, which builds the server with scripts/s3server.sh")
	}
	dir := t.TempDir()
	// Only the admin identity: anonymous reads are allowed by the
	// bucket policy below, as on a production bucket.
	cfg := fmt.Sprintf(`{"identities":[{"name":"admin","credentials":[{"accessKey":%q,"secretKey":%q}],"actions":["Admin","Read","List","Tagging","Write"]}]}`, s3Key, s3Secret)
	if err := os.WriteFile(filepath.Join(dir, "s3.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := freePorts(t, 8)
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "server", "-dir="+data, "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-master.port="+p[0], "-master.port.grpc="+p[1], "-master.telemetry=false", "-master.volumeSizeLimitMB=256",
		"-volume.port="+p[2], "-volume.port.grpc="+p[3], "-volume.max=0",
		"-filer", "-filer.port="+p[4], "-filer.port.grpc="+p[5],
		"-s3", "-s3.port="+p[6], "-s3.port.grpc="+p[7], "-s3.port.iceberg=0", "-s3.port.lance=0",
		"-s3.config="+filepath.Join(dir, "s3.json"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("server log (tail):\n%s", tail(b, 4000))
		}
	})
	endpoint := "127.0.0.1:" + p[6]
	c, err := minio.New(endpoint, &minio.Options{Creds: credentials.NewStaticV4(s3Key, s3Secret, ""), MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The gateway answers before its filer is up: retry the bucket's
	// creation until it is made.
	for {
		err = c.MakeBucket(ctx, s3Bucket, minio.MakeBucketOptions{})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("S3 server not ready: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	policy := fmt.Sprintf(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":["*"]},"Action":["s3:GetObject"],"Resource":["arn:aws:s3:::%s/*"]}]}`, s3Bucket)
	if err := c.SetBucketPolicy(ctx, s3Bucket, policy); err != nil {
		t.Fatal(err)
	}
	return endpoint
}

func freePorts(t *testing.T, n int) []string {
	var ports []string
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// openS3 opens the store the way ferry does, from a --car-store spec and
// the environment's credentials.
func openS3(t *testing.T, endpoint, prefix string) carstore.Store {
	t.Helper()
	t.Setenv("AWS_ACCESS_KEY_ID", s3Key)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s3Secret)
	spec := "s3://" + s3Bucket + "/" + prefix + "?endpoint=" + endpoint + "&secure=false&spool=" + t.TempDir()
	s, err := carstore.Open(spec, "")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestS3(t *testing.T) {
	endpoint := startS3(t)

	t.Run("contract", func(t *testing.T) {
		s := openS3(t, endpoint, "pins")
		testContract(t, s)
		c := testutil.MakeCAR(t, 1, 3<<20)
		want := "http://" + endpoint + "/" + s3Bucket + "/pins/" + carstore.Name(c.CID)
		if got := s.URL(c.CID); got != want {
			t.Fatalf("URL %q, want %q", got, want)
		}
		if strings.Contains(s.URL(c.CID), s3Key) || strings.Contains(s.URL(c.CID), s3Secret) {
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
			AccessKey: s3Key, SecretKey: s3Secret, SpoolDir: t.TempDir()})
		if err == nil {
			t.Fatal("opened a bucket that does not exist")
		}
	})

	t.Run("wrong secret", func(t *testing.T) {
		_, err := carstore.OpenS3(context.Background(), carstore.S3Config{Endpoint: endpoint, Bucket: s3Bucket,
			AccessKey: s3Key, SecretKey: "wrong" + s3Secret, SpoolDir: t.TempDir()})
		if err == nil {
			t.Fatal("opened the bucket with a wrong secret")
		}
		if bytes.Contains([]byte(err.Error()), []byte(s3Secret)) {
			t.Fatalf("error carries the secret: %v", err)
		}
	})
}
