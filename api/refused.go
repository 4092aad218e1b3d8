package api

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ferry-dev/ferry/wire"
)

// Bounds of the refused-report notes: the body read of a refused report
// (enough for any report's aggregate field, which comes first in every
// engine we know) and the aggregates remembered.
const (
	maxRefusedPeek = 64 << 10
	maxRefused     = 1024
)

type refusals struct {
	mu sync.Mutex
	by map[uint64]wire.RefusedReport
}

// noteRefused remembers, on the aggregate it names, a report refused for
// why. A body that names no closed aggregate is forgotten.
func (a *API) noteRefused(r *http.Request, why string) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxRefusedPeek))
	var peek struct {
		Aggregate json.RawMessage `json:"aggregate"`
		Status    string          `json:"status"`
	}
	if json.Unmarshal(body, &peek) != nil || len(peek.Aggregate) == 0 {
		return
	}
	ref := strings.Trim(string(peek.Aggregate), `"`)
	v, err := a.Store.Aggregate(ref, 0, 0)
	if err != nil {
		return
	}
	note := wire.RefusedReport{At: time.Now().UTC(), Status: truncate(peek.Status, 64), Error: why}
	a.refused.mu.Lock()
	defer a.refused.mu.Unlock()
	if a.refused.by == nil {
		a.refused.by = map[uint64]wire.RefusedReport{}
	}
	if _, ok := a.refused.by[v.ID]; !ok && len(a.refused.by) >= maxRefused {
		for id := range a.refused.by { // any one: these are notes, not facts
			delete(a.refused.by, id)
			break
		}
	}
	a.refused.by[v.ID] = note
}

// withRefused is v with the last refused report of its aggregate, if any;
// v itself (possibly a cached view) is not changed.
func (a *API) withRefused(v *wire.AggregateView) *wire.AggregateView {
	a.refused.mu.Lock()
	note, ok := a.refused.by[v.ID]
	a.refused.mu.Unlock()
	if !ok {
		return v
	}
	c := *v
	c.ReportRefused = &note
	return &c
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
