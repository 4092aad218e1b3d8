package carstore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// openTimeout bounds the check that an S3 bucket exists, so a wrong
// endpoint fails the command instead of hanging it.
const openTimeout = 30 * time.Second

// Open opens the store a --car-store flag names:
//
//   - a directory path: a Dir served under publicURL (ferry's /cars URL);
//   - s3://bucket[/prefix]?endpoint=host:port[&secure=false][&region=r][&spool=dir]:
//     an S3 store whose CARs are downloaded from publicURL (the bucket's
//     public or CDN URL; empty means http(s)://endpoint/bucket). The
//     prefix is a folder: s3://b/cars and s3://b/cars/ both keep CARs
//     under cars/. Credentials come from AWS_ACCESS_KEY_ID and
//     AWS_SECRET_ACCESS_KEY only, so they appear in no flag, process
//     list or log.
func Open(spec, publicURL string) (Store, error) {
	if !strings.HasPrefix(spec, "s3://") {
		return OpenDir(spec, publicURL)
	}
	cfg, err := ParseS3(spec)
	if err != nil {
		return nil, err
	}
	cfg.PublicURL = publicURL
	cfg.AccessKey = os.Getenv("AWS_ACCESS_KEY_ID")
	cfg.SecretKey = os.Getenv("AWS_SECRET_ACCESS_KEY")
	if cfg.AccessKey == "" || cfg.SecretKey == "" {
		return nil, errors.New("carstore: an s3 store needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment")
	}
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	return OpenS3(ctx, cfg)
}

// ParseS3 reads an s3:// store spec (see Open) into a config without
// credentials or public URL.
func ParseS3(spec string) (S3Config, error) {
	u, err := url.Parse(spec)
	if err != nil {
		// Said without the spec (url's error quotes it): a mistyped spec
		// may hold credentials.
		return S3Config{}, errors.New("carstore: the s3 store spec is not a URL")
	}
	if u.User != nil {
		return S3Config{}, errors.New("carstore: s3 credentials go in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, not in --car-store")
	}
	// From here on the spec holds no credentials and may be quoted.
	if u.Scheme != "s3" || u.Host == "" {
		return S3Config{}, fmt.Errorf("carstore: %q is not s3://bucket[/prefix]", spec)
	}
	cfg := S3Config{Bucket: u.Host, Secure: true}
	if p := strings.Trim(u.Path, "/"); p != "" {
		cfg.Prefix = p + "/"
	}
	for k, vs := range u.Query() {
		v := vs[len(vs)-1]
		switch k {
		case "endpoint":
			cfg.Endpoint = v
		case "secure":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return S3Config{}, fmt.Errorf("carstore: s3 secure=%q: want true or false", v)
			}
			cfg.Secure = b
		case "region":
			cfg.Region = v
		case "spool":
			cfg.SpoolDir = v
		default:
			return S3Config{}, fmt.Errorf("carstore: s3 store option %q is not endpoint, secure, region or spool", k)
		}
	}
	if cfg.Endpoint == "" {
		return S3Config{}, fmt.Errorf("carstore: %q needs ?endpoint=host[:port]", spec)
	}
	return cfg, nil
}
