package dashboard

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/projections"
	"github.com/ferry-dev/ferry/spade"
	"github.com/ferry-dev/ferry/wire"
)

// maxPieces bounds the pieces an aggregate's page lists.
const maxPieces = 1000

func isNotFound(err error) bool { return errors.Is(err, projections.ErrNotFound) }
func isBadRef(err error) bool   { return errors.Is(err, projections.ErrBadRef) }

// search leads to the page of what q names: a CAR by its CID, an
// aggregate by id or piece CID, or a CAR by its piece CID.
func (d *Dashboard) search(w http.ResponseWriter, r *http.Request) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	if q == "" {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	to, err := d.find(q)
	if err != nil {
		d.fail(w, err, q)
		return
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// find is the page of q, or an error wrapping ErrNotFound or ErrBadRef.
func (d *Dashboard) find(q string) (string, error) {
	if _, err := strconv.ParseUint(q, 10, 64); err == nil {
		return d.aggregatePath(q)
	}
	car, err := events.CanonicalCID(q)
	if err != nil {
		return "", fmt.Errorf("%w: %q is neither an aggregate id nor a CID", projections.ErrBadRef, q)
	}
	if _, err := d.Store.Car(car); err == nil {
		return "/ui/cars/" + url.PathEscape(car), nil
	} else if !isNotFound(err) {
		return "", err
	}
	if to, err := d.aggregatePath(q); err == nil || !isNotFound(err) && !isBadRef(err) {
		return to, err
	}
	if car, err = d.Store.CarByPiece(q); err == nil {
		return "/ui/cars/" + url.PathEscape(car), nil
	} else if !isNotFound(err) {
		return "", err
	}
	return "", fmt.Errorf("no CAR, aggregate or piece is %s: %w", q, projections.ErrNotFound)
}

func (d *Dashboard) aggregatePath(ref string) (string, error) {
	a, err := d.Store.Aggregate(ref, 0, 0)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("/ui/aggregates/%d", a.ID), nil
}

// carPage is a CAR's view: its fields in the API's order, in the API's
// JSON names, and the view itself for the sections made for it.
type carPage struct {
	Car    *wire.CarView
	Fields []field
}

func (d *Dashboard) car(w http.ResponseWriter, r *http.Request) {
	cid, err := events.CanonicalCID(r.PathValue("cid"))
	if err != nil {
		d.fail(w, fmt.Errorf("%w: %q is not a CID: %v", projections.ErrBadRef, r.PathValue("cid"), err), r.PathValue("cid"))
		return
	}
	c, err := d.Store.Car(cid)
	if err != nil {
		d.fail(w, err, cid)
		return
	}
	d.addWork(r.Context(), c)
	fs, err := fields(c, "deals", "inclusion")
	if err != nil {
		d.fail(w, err, cid)
		return
	}
	d.render(w, http.StatusOK, "car.html", carPage{Car: c, Fields: fs})
}

// addWork adds a QUEUED CAR's last failed piece attempt, as the API's
// status does: why a CAR waits is otherwise only in a worker's log. A
// record that cannot be read leaves the page without it.
func (d *Dashboard) addWork(ctx context.Context, c *wire.CarView) {
	if d.PieceWork == nil || c.State != aggregator.Queued {
		return
	}
	if work, err := d.PieceWork(ctx, c.Car); err == nil {
		c.Work = work
	}
}

type aggregatePage struct {
	Agg    *wire.AggregateView
	Fields []field
}

func (d *Dashboard) aggregate(w http.ResponseWriter, r *http.Request) {
	a, err := d.Store.Aggregate(r.PathValue("ref"), -1, maxPieces)
	if err != nil {
		d.fail(w, err, r.PathValue("ref"))
		return
	}
	fs, err := fields(a, "deals", "pieces", "next")
	if err != nil {
		d.fail(w, err, r.PathValue("ref"))
		return
	}
	d.render(w, http.StatusOK, "aggregate.html", aggregatePage{Agg: a, Fields: fs})
}

// manifest is the API's GET /v1/aggregates/{id}/manifest under the
// dashboard's guard, so that a browser with Basic auth can follow it.
func (d *Dashboard) manifest(w http.ResponseWriter, r *http.Request) {
	m, err := spade.ReadManifest(d.Store, r.PathValue("ref"))
	if err != nil {
		d.fail(w, err, r.PathValue("ref"))
		return
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		d.fail(w, err, "")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(data, '\n'))
}

// field is one top-level member of a view's JSON, for pages that list
// every field a view has, those added later included.
type field struct {
	Name  string
	Value string
	// Block is set for objects and arrays, shown indented.
	Block bool
}

// fields lists v's JSON members in order, leaving out skip (shown in
// sections of their own).
func fields(v any, skip ...string) ([]field, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var members []struct {
		name string
		raw  json.RawMessage
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil { // {
		return nil, err
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, err
		}
		members = append(members, struct {
			name string
			raw  json.RawMessage
		}{tok.(string), raw})
	}
	var out []field
	for _, m := range members {
		if slices.Contains(skip, m.name) {
			continue
		}
		f := field{Name: m.name, Value: string(m.raw)}
		switch m.raw[0] {
		case '{', '[':
			var b bytes.Buffer
			_ = json.Indent(&b, m.raw, "", "  ")
			f.Value, f.Block = b.String(), true
		case '"':
			_ = json.Unmarshal(m.raw, &f.Value)
		}
		out = append(out, f)
	}
	return out, nil
}

var funcs = template.FuncMap{
	"bytes":    humanBytes,
	"duration": humanDuration,
	"percent": func(part, whole uint64) string {
		if whole == 0 {
			return "0"
		}
		return strconv.FormatFloat(100*float64(part)/float64(whole), 'f', 1, 64)
	},
	"ago":    func(now, t time.Time) string { return humanDuration(now.Sub(t)) },
	"base64": base64.StdEncoding.EncodeToString,
	"since": func(now time.Time, s string) string {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return ""
		}
		return humanDuration(now.Sub(t))
	},
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func humanDuration(d time.Duration) string {
	neg := d < 0
	if neg {
		d = -d
	}
	s := d.Round(time.Second).String()
	if d >= time.Hour {
		s = fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	if neg {
		return "-" + s
	}
	return s
}
