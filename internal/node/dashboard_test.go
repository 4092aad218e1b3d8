package node

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/internal/testutil"
	"github.com/ferry-dev/ferry/jetlog"
	"github.com/ferry-dev/ferry/spade"
)

const dashToken = "read-secret"

// dashSetup is a ferry with a read token whose first aggregate has deals,
// with a second aggregate filling and one rejected input: everything the
// dashboard shows.
type dashSetup struct {
	*dealSetup
	base     string
	filling  []testutil.CAR
	rejected string // the CID of the rejected CAR
}

func startDashboard(t *testing.T) *dashSetup {
	t.Helper()
	d := startDealsOn(t, "", 6, spade.SimConfig{Delay: 5 * time.Millisecond}, "", func(c *Config) {
		c.ReadToken, c.Tick = dashToken, 100*time.Millisecond
	})
	d.api.Token = dashToken
	s := &dashSetup{dealSetup: d, base: "http://" + d.n.HTTPAddr()}
	d.publishAll(t)
	d.waitProcessed(t, 90*time.Second)
	ctx := context.Background()
	pub := jetlog.NewPublisher(d.js, jetlog.DefaultSubjects)
	for i := range 2 {
		c := testutil.MakeCAR(t, uint64(5000+i), 3000+i*100)
		s.filling = append(s.filling, c)
		if _, err := pub.Publish(ctx, c.Event(s.base+"/cars", true)); err != nil {
			t.Fatal(err)
		}
	}
	bad := testutil.MakeCAR(t, 6000, 1000).Event(s.base+"/cars", true)
	bad.MD5 = "not hex"
	s.rejected = bad.Car
	if _, err := pub.Publish(ctx, bad); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "the new CARs to be aggregating, the bad one rejected and the clock started", func() bool {
		for _, c := range s.filling {
			if v, err := d.api.Car(ctx, c.CID.String()); err != nil || v.State != aggregator.Aggregating {
				return false
			}
		}
		v, err := d.api.Car(ctx, s.rejected)
		if err != nil || v.State != aggregator.Rejected {
			return false
		}
		page, err := d.api.Aggregates(ctx, aggregator.Ingesting, 0, 10)
		return err == nil && len(page.Aggregates) == 1 && !page.Aggregates[0].WaitSince.IsZero()
	})
	return s
}

// get requests path with no redirects followed, authorized by set.
func (s *dashSetup) get(t *testing.T, path string, set func(*http.Request)) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if set != nil {
		set(req)
	}
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func basic(user, pass string) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(user, pass) }
}

func bearer(token string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }
}

func TestDashboardAuthAndSearch(t *testing.T) {
	s := startDashboard(t)
	ctx := context.Background()
	agg, err := s.api.Car(ctx, s.cars[0].CID.String())
	if err != nil {
		t.Fatal(err)
	}
	aggPage := "/ui/aggregates/" + itoa(agg.Aggregate)
	carPage := "/ui/cars/" + s.cars[0].CID.String()
	unknown := testutil.MakeCAR(t, 9999, 500).CID.String()

	t.Run("the overview wants the read token and asks a browser for it", func(t *testing.T) {
		for _, set := range []func(*http.Request){nil, basic("ops", "wrong"), bearer("wrong"), basic(dashToken, "")} {
			resp, _ := s.get(t, "/", set)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", resp.StatusCode)
			}
			if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Basic ") {
				t.Fatalf("WWW-Authenticate %q, want Basic", got)
			}
		}
	})
	t.Run("Basic auth with the token as password and a bearer token are both taken", func(t *testing.T) {
		for _, set := range []func(*http.Request){basic("ops", dashToken), basic("", dashToken), bearer(dashToken)} {
			resp, body := s.get(t, "/", set)
			if resp.StatusCode != http.StatusOK || !strings.Contains(body, `class="ingesting-agg"`) {
				t.Fatalf("status %d, body %.200q", resp.StatusCode, body)
			}
		}
	})
	t.Run("every page and asset is guarded", func(t *testing.T) {
		for _, p := range []string{carPage, aggPage, aggPage + "/manifest", "/ui/search?q=1", "/ui/static/style.css"} {
			if resp, _ := s.get(t, p, nil); resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("%s: status %d without a token", p, resp.StatusCode)
			}
			if resp, _ := s.get(t, p, basic("", dashToken)); resp.StatusCode >= 400 {
				t.Fatalf("%s: status %d with the token", p, resp.StatusCode)
			}
		}
	})
	t.Run("the API's routes are still the API's", func(t *testing.T) {
		resp, body := s.get(t, "/v1/aggregates", bearer(dashToken))
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"aggregates"`) {
			t.Fatalf("GET /v1/aggregates: %d %.200q", resp.StatusCode, body)
		}
		if resp, _ := s.get(t, "/v1/aggregates", basic("", dashToken)); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("GET /v1/aggregates with Basic auth: %d, want 401 (the API takes bearer tokens only)", resp.StatusCode)
		}
		if resp, _ := s.get(t, "/nowhere", bearer(dashToken)); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("GET /nowhere: %d", resp.StatusCode)
		}
		if resp, _ := s.get(t, "/healthz", nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /healthz: %d", resp.StatusCode)
		}
	})

	aggView, err := s.api.Aggregate(ctx, itoa(agg.Aggregate), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, q, to string }{
		{"a CAR CID leads to its page", s.cars[0].CID.String(), carPage},
		{"a CAR's piece CID leads to the CAR's page", s.cars[0].Piece.MustV2().String(), carPage},
		{"an aggregate id leads to its page", itoa(agg.Aggregate), aggPage},
		{"an aggregate's piece CID leads to its page", aggView.Piece, aggPage},
		{"an aggregate's piece CID v1 leads to its page", aggView.PieceV1, aggPage},
		{"a rejected CAR leads to its page", s.rejected, "/ui/cars/" + s.rejected},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, _ := s.get(t, "/ui/search?q="+url.QueryEscape(c.q), bearer(dashToken))
			if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != c.to {
				t.Fatalf("status %d to %q, want 303 to %q", resp.StatusCode, resp.Header.Get("Location"), c.to)
			}
		})
	}
	for _, c := range []struct {
		name, q string
		status  int
	}{
		{"an unknown CID is not found", unknown, http.StatusNotFound},
		{"an unknown aggregate id is not found", "4242", http.StatusNotFound},
		{"what is not a CID or id is a bad reference", "no such thing", http.StatusBadRequest},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := s.get(t, "/ui/search?q="+url.QueryEscape(c.q), bearer(dashToken))
			if resp.StatusCode != c.status || !strings.Contains(body, `id="error-title"`) {
				t.Fatalf("status %d, want %d; body %.300q", resp.StatusCode, c.status, body)
			}
		})
	}
	t.Run("the page of an unknown CAR is not found", func(t *testing.T) {
		if resp, _ := s.get(t, "/ui/cars/"+unknown, bearer(dashToken)); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
