// Package dashboard serves ferry's overview page at GET / and a page for
// each CAR and aggregate, for an operator's browser.
//
// # Rules
//
//   - Every figure comes from the read models the API answers from
//     (projections.Store, projections.PinStore) or from JetStream's own
//     stream state; the page keeps nothing but the ingest rate's samples.
//   - Server-rendered with html/template and assets embedded with embed:
//     no JavaScript framework and no build step. The one script reloads
//     the overview every 10 s; the pages work without it.
//   - The same guard as the API's reads: when ReadToken is set, every page
//     wants it, as "Authorization: Bearer <token>" or as the password of
//     HTTP Basic auth (any user name), so that a browser, which cannot send
//     a bearer token when navigating, prompts for it. Both are compared in
//     constant time.
//   - Reads are bounded: lists show the newest or oldest few, counts of
//     waiting CARs stop at a cap, and only the search by a CAR's piece CID
//     reads every CAR record (projections.Store.CarByPiece).
package dashboard

import (
	"context"
	"crypto/subtle"
	"embed"
	"html/template"
	"log/slog"
	"net/http"
	"strings"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/projections"
	"github.com/ferry-dev/ferry/wire"
	"github.com/ferry-dev/ferry/workqueue"
	"github.com/nats-io/nats.go/jetstream"
)

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static
var staticFiles embed.FS

// Dashboard serves the pages. Settings, JS, Queues and Pins may be left
// unset; their sections then say so.
type Dashboard struct {
	Store *projections.Store
	// Pins is the pins read model; nil leaves out the pins section.
	Pins *projections.PinStore
	// JS and Queues give the work queues' stream state.
	JS     jetstream.JetStream
	Queues []workqueue.Queue
	// Settings are the fold's settings (the log's), for the INGESTING
	// aggregates' range, max-wait close and group release, until the read
	// models have applied the log's own (projections.Store.Settings),
	// which then win: they follow a settings.change.
	Settings func() events.Settings
	// ReadToken, when set, guards every page (see the package doc).
	ReadToken string
	// PieceWork returns a QUEUED CAR's last failed piece attempt, or nil
	// (api.API.PieceWork); nil leaves it out of the pages.
	PieceWork func(ctx context.Context, car string) (*wire.WorkAttempt, error)
	// WriteToken, the API's write token, opens the pages too: whoever may
	// write may read.
	WriteToken string
	Log        *slog.Logger

	rate rate
	tmpl *template.Template
}

// Register adds the dashboard's routes to mux: GET / (exactly), the
// pages under /ui/ and their assets under /ui/static/.
func (d *Dashboard) Register(mux *http.ServeMux) {
	d.tmpl = template.Must(template.New("").Funcs(funcs).ParseFS(templateFiles, "templates/*.html"))
	if d.Log == nil {
		d.Log = slog.Default()
	}
	mux.HandleFunc("GET /{$}", d.auth(d.overview))
	mux.HandleFunc("GET /ui/search", d.auth(d.search))
	mux.HandleFunc("GET /ui/cars/{cid}", d.auth(d.car))
	mux.HandleFunc("GET /ui/aggregates/{ref}", d.auth(d.aggregate))
	mux.HandleFunc("GET /ui/aggregates/{ref}/manifest", d.auth(d.manifest))
	mux.Handle("GET /ui/static/", d.auth(http.StripPrefix("/ui/", http.FileServerFS(staticFiles)).ServeHTTP))
}

// auth admits a request that carries ReadToken (or WriteToken) as a bearer token or as
// Basic auth's password, and asks a browser for it otherwise.
func (d *Dashboard) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if d.ReadToken == "" || authorized(r, d.ReadToken) || d.WriteToken != "" && authorized(r, d.WriteToken) {
			h(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="ferry", charset="UTF-8"`)
		d.render(w, http.StatusUnauthorized, "error.html", errorPage{Title: "Unauthorized",
			Message: "This ferry wants its read token: as the password (any user name), or as a bearer token."})
	}
}

func authorized(r *http.Request, token string) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		_, got, ok = r.BasicAuth()
	}
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}

type errorPage struct {
	Title, Message string
	Query          string
}

// render executes a page into memory first, so that a failure half-way
// answers 500 instead of half a page.
func (d *Dashboard) render(w http.ResponseWriter, status int, name string, data any) {
	var b strings.Builder
	if err := d.tmpl.ExecuteTemplate(&b, name, data); err != nil {
		d.Log.Error("dashboard page", "page", name, "err", err)
		http.Error(w, "rendering the page failed: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}

// fail answers an error page: 404 for what is not there, 400 for a
// malformed reference, 500 otherwise.
func (d *Dashboard) fail(w http.ResponseWriter, err error, query string) {
	status, title := http.StatusInternalServerError, "Error"
	switch {
	case isNotFound(err):
		status, title = http.StatusNotFound, "Not found"
	case isBadRef(err):
		status, title = http.StatusBadRequest, "Not a CAR, aggregate or piece"
	}
	d.render(w, status, "error.html", errorPage{Title: title, Message: err.Error(), Query: query})
}
