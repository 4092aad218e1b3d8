// Package s3test starts a real S3-compatible server, SeaweedFS, on
// loopback for the tests of ferry's S3 CAR store (carstore's, under build
// tag s3, and the kubo tier's). The server binary is scripts/s3server.sh's,
// named by FERRY_S3_SERVER (make s3-test and make e2e set it).
package s3test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// The server's one identity and the bucket Start makes, readable by
// anyone (s3:GetObject), as a production bucket ferry's CARs are
// downloaded from is.
const (
	Key    = "ferrytestkey"
	Secret = "ferrytestsecret0123456789"
	Bucket = "cars"
)

// Start starts SeaweedFS's S3 gateway (with its master, volume and filer
// servers) in a temp dir, creates the bucket with a public-read policy,
// and returns the S3 endpoint.
func Start(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("FERRY_S3_SERVER")
	if bin == "" {
		t.Fatal("FERRY_S3_SERVER is not set: run `make s3-test`, which builds the server with scripts/s3server.sh")
	}
	dir := t.TempDir()
	// Only the admin identity: anonymous reads are allowed by the
	// bucket policy below, as on a production bucket.
	cfg := fmt.Sprintf(`{"identities":[{"name":"admin","credentials":[{"accessKey":%q,"secretKey":%q}],"actions":["Admin","Read","List","Tagging","Write"]}]}`, Key, Secret)
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
	c, err := minio.New(endpoint, &minio.Options{Creds: credentials.NewStaticV4(Key, Secret, ""), MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The gateway answers before its filer is up: retry the bucket's
	// creation until it is made.
	for {
		err = c.MakeBucket(ctx, Bucket, minio.MakeBucketOptions{})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("S3 server not ready: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	policy := fmt.Sprintf(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":["*"]},"Action":["s3:GetObject"],"Resource":["arn:aws:s3:::%s/*"]}]}`, Bucket)
	if err := c.SetBucketPolicy(ctx, Bucket, policy); err != nil {
		t.Fatal(err)
	}
	return endpoint
}

func freePorts(t testing.TB, n int) []string {
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
