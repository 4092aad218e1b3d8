package carstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config says which bucket an S3 store keeps its CARs in.
type S3Config struct {
	// Endpoint is the S3 server's host[:port], without a scheme.
	Endpoint string
	Bucket   string
	// Prefix is put before every object name, as is: "cars/" keeps CARs
	// under cars/<cid>.car.
	Prefix string
	// AccessKey and SecretKey sign requests. They are never put in a URL
	// or an error.
	AccessKey, SecretKey string
	// Secure selects https to Endpoint.
	Secure bool
	// Region is the bucket's region; empty lets the client ask the server.
	Region string
	// PublicURL is where deal engines download the bucket's objects from
	// (the bucket's public or CDN URL); a CAR's URL is PublicURL/<object>.
	// Empty means the endpoint's path-style bucket URL,
	// http(s)://<Endpoint>/<Bucket>, which serves only a public-read bucket.
	PublicURL string
	// SpoolDir is the local directory for spool files; empty means
	// <os.TempDir()>/ferry-car-spool.
	SpoolDir string
	// Transport, when set, carries the client's requests.
	Transport http.RoundTripper
}

// S3 is a Store in an S3-compatible bucket: a CAR is the object
// <prefix><cid>.car, downloaded from the configured public URL. Spool
// files stay local and Put uploads them (in parts when large), so the
// bucket never holds a partial CAR under a CAR's name.
type S3 struct {
	c      *minio.Client
	bucket string
	prefix string
	public string
	spool  string
}

// OpenS3 connects to the bucket of cfg and checks that it exists.
func OpenS3(ctx context.Context, cfg S3Config) (*S3, error) {
	if cfg.Endpoint == "" || cfg.Bucket == "" {
		return nil, errors.New("carstore: s3 needs an endpoint and a bucket")
	}
	if strings.ContainsAny(cfg.Endpoint, "/@") {
		return nil, fmt.Errorf("carstore: s3 endpoint %q is not a host[:port]", cfg.Endpoint)
	}
	if strings.ContainsAny(cfg.Prefix, "?#%\\ ") || strings.HasPrefix(cfg.Prefix, "/") {
		// The prefix goes into URLs as it is: keep it to plain path
		// characters rather than escape it in two places.
		return nil, fmt.Errorf("carstore: s3 prefix %q must be a plain relative path", cfg.Prefix)
	}
	public := cfg.PublicURL
	if public == "" {
		scheme := "http"
		if cfg.Secure {
			scheme = "https"
		}
		public = scheme + "://" + cfg.Endpoint + "/" + cfg.Bucket
	}
	u, err := url.Parse(public)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("carstore: s3 public URL %q is not an http(s) URL", public)
	}
	if u.User != nil || u.RawQuery != "" {
		// A URL with credentials or a signature would leak them into
		// every car.replicated event and expire with the signature.
		return nil, errors.New("carstore: s3 public URL must carry no credentials or query")
	}
	spool := cfg.SpoolDir
	if spool == "" {
		spool = defaultSpool()
	}
	if err := os.MkdirAll(spool, 0o700); err != nil {
		return nil, fmt.Errorf("carstore: %w", err)
	}
	c, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:     credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:    cfg.Secure,
		Region:    cfg.Region,
		Transport: cfg.Transport,
		// Path-style works with every S3-compatible server and with
		// bucket names that are not DNS labels.
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		return nil, fmt.Errorf("carstore: s3: %w", err)
	}
	ok, err := c.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("carstore: s3 bucket %q: %w", cfg.Bucket, err)
	}
	if !ok {
		return nil, fmt.Errorf("carstore: s3 bucket %q does not exist", cfg.Bucket)
	}
	return &S3{c: c, bucket: cfg.Bucket, prefix: cfg.Prefix, public: strings.TrimSuffix(public, "/"), spool: spool}, nil
}

func defaultSpool() string { return os.TempDir() + string(os.PathSeparator) + "ferry-car-spool" }

// object is the object name of a CAR.
func (s *S3) object(car cid.Cid) string { return s.prefix + Name(car) }

func (s *S3) Spool() (*os.File, error) { return os.CreateTemp(s.spool, "car-*.tmp") }

// Put uploads the spool file unless the bucket already has the CAR, then
// removes the spool file, whether or not the upload succeeded (as Dir's
// failed rename does): the caller fetches again. Two processes that race
// past the HEAD both upload the same bytes under the same name, which
// leaves one whole CAR.
func (s *S3) Put(ctx context.Context, car cid.Cid, f *os.File) error {
	f.Close()
	defer os.Remove(f.Name())
	_, err := s.Stat(ctx, car)
	if err == nil {
		return nil
	}
	if !errors.Is(err, ErrNotFound) {
		return err
	}
	_, err = s.c.FPutObject(ctx, s.bucket, s.object(car), f.Name(), minio.PutObjectOptions{
		ContentType: "application/vnd.ipld.car",
	})
	if err != nil {
		return fmt.Errorf("carstore: s3 put %s: %w", s.object(car), err)
	}
	return nil
}

func (s *S3) Discard(f *os.File) error { return discard(f) }

func (s *S3) Stat(ctx context.Context, car cid.Cid) (int64, error) {
	info, err := s.c.StatObject(ctx, s.bucket, s.object(car), minio.StatObjectOptions{})
	if err != nil {
		return 0, s.err(car, err)
	}
	return info.Size, nil
}

func (s *S3) Open(ctx context.Context, car cid.Cid) (io.ReadCloser, error) {
	obj, err := s.c.GetObject(ctx, s.bucket, s.object(car), minio.GetObjectOptions{})
	if err != nil {
		return nil, s.err(car, err)
	}
	// GetObject sends nothing until read: Stat sends the request, so a
	// missing CAR is ErrNotFound here rather than at the first Read.
	if _, err := obj.Stat(); err != nil {
		obj.Close()
		return nil, s.err(car, err)
	}
	return obj, nil
}

func (s *S3) URL(car cid.Cid) string { return s.public + "/" + s.object(car) }

// Sweep removes spool files not written to for longer than age: those of
// writers that died. It returns how many it removed.
func (s *S3) Sweep(age time.Duration) (int, error) { return sweep(s.spool, age) }

// err maps the server's "no such object" to ErrNotFound.
func (s *S3) err(car cid.Cid, err error) error {
	r := minio.ToErrorResponse(err)
	if r.Code == "NoSuchKey" || (r.StatusCode == http.StatusNotFound && r.Code != "NoSuchBucket") {
		return ErrNotFound
	}
	return fmt.Errorf("carstore: s3 %s: %w", s.object(car), err)
}
