package carstore_test

import (
	"strings"
	"testing"

	"github.com/ferry-dev/ferry/carstore"
)

func TestParseS3(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want carstore.S3Config
	}{
		{"s3://cars?endpoint=s3.example.org", carstore.S3Config{Bucket: "cars", Endpoint: "s3.example.org", Secure: true}},
		{"s3://cars/pins?endpoint=127.0.0.1:9000&secure=false", carstore.S3Config{Bucket: "cars", Prefix: "pins/", Endpoint: "127.0.0.1:9000"}},
		{"s3://cars/a/b/?endpoint=h&region=eu-west-1&spool=/var/spool/ferry", carstore.S3Config{Bucket: "cars", Prefix: "a/b/", Endpoint: "h", Secure: true, Region: "eu-west-1", SpoolDir: "/var/spool/ferry"}},
	} {
		got, err := carstore.ParseS3(tc.spec)
		if err != nil {
			t.Fatalf("%s: %v", tc.spec, err)
		}
		if got != tc.want {
			t.Fatalf("%s: %+v, want %+v", tc.spec, got, tc.want)
		}
	}
	for _, spec := range []string{
		"s3://cars",                            // no endpoint
		"s3:///pins?endpoint=h",                // no bucket
		"s3://cars?endpoint=h&secure=maybe",    // not a bool
		"s3://cars?endpoint=h&acl=public-read", // unknown option
		"s3://KEYID:SECRETKEY@cars?endpoint=h", // credentials in the flag
	} {
		_, err := carstore.ParseS3(spec)
		if err == nil {
			t.Fatalf("%s: parsed", spec)
		}
		if strings.Contains(err.Error(), "SECRETKEY") {
			t.Fatalf("%s: the error repeats the secret: %v", spec, err)
		}
	}
}

func TestOpenS3NeedsEnvCredentials(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	_, err := carstore.Open("s3://cars?endpoint=127.0.0.1:1&secure=false", "")
	if err == nil || !strings.Contains(err.Error(), "AWS_ACCESS_KEY_ID") {
		t.Fatalf("Open without credentials: %v, want an error naming AWS_ACCESS_KEY_ID", err)
	}
}

func TestOpenDirSpec(t *testing.T) {
	dir := t.TempDir()
	s, err := carstore.Open(dir, "http://127.0.0.1:8080/cars")
	if err != nil {
		t.Fatal(err)
	}
	d, ok := s.(*carstore.Dir)
	if !ok || d.Path() != dir {
		t.Fatalf("Open(%q) = %T, want a Dir at that path", dir, s)
	}
}
