package events_test

import (
	"strings"
	"testing"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/internal/testutil"
)

// TestValidateRefusesURLsNoWorkerWouldFetch: a URL with userinfo or of
// another scheme than http(s) is refused when the event arrives, with a
// reason that names the URL by its index and does not repeat the
// credentials. Addresses are not judged here: that needs DNS, which the
// fold must not use; piece workers judge them when they dial.
func TestValidateRefusesURLsNoWorkerWouldFetch(t *testing.T) {
	c := testutil.MakeCAR(t, 1, 3000)
	tests := []struct {
		name, url, reason string
	}{
		{"a user and password are refused", "http://user:hunter2@carpark.example/x.car", "urls[0]: userinfo (user@ or user:password@) is not allowed"},
		{"a user alone is refused", "https://admin@carpark.example/x.car", "urls[0]: userinfo"},
		{"a file URL is refused", "file:///etc/passwd", "urls[0]: \"file:///etc/passwd\" is not an http(s) URL"},
		{"a gopher URL is refused", "gopher://127.0.0.1:6379/_INFO", "is not an http(s) URL"},
		{"a loopback IP literal is left to the workers", "http://127.0.0.1:8080/cars/x.car", ""},
		{"a decimal IP host is left to the workers", "http://2130706433/x.car", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := c.Event("https://carpark.example", false)
			ev.URLs = []string{tt.url}
			got := reasonOf(ev.Validate(aggregator.DealRoom(8 << 20)))
			if tt.reason == "" && got != "" || !strings.Contains(got, tt.reason) {
				t.Fatalf("Validate = %q, want %q", got, tt.reason)
			}
			if strings.Contains(got, "hunter2") {
				t.Fatalf("the reason repeats the password: %q", got)
			}
		})
	}
}
