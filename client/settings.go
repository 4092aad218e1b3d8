package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"

	"github.com/ferry-dev/ferry/wire"
)

// ChangeSettings asks ferry to fold the inputs after this order under
// another policy (POST /v1/settings). The answer names the order's input
// sequence and the settings it makes.
func (c *HTTP) ChangeSettings(ctx context.Context, change wire.SettingsChange) (*wire.SettingsChanged, error) {
	var out wire.SettingsChanged
	if err := c.do(ctx, http.MethodPost, "/v1/settings", change, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Settings is GET /v1/settings as the server answers it.
func (c *HTTP) Settings(ctx context.Context) (json.RawMessage, error) {
	var out json.RawMessage
	if err := c.do(ctx, http.MethodGet, "/v1/settings", nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Filling is an INGESTING aggregate and the group it fills for ("": the
// shared pool).
type Filling struct {
	ID    uint64 `json:"id"`
	Group string `json:"group,omitempty"`
}

// Ingesting lists the INGESTING aggregates, in id order: the shared
// pool's and, under a group-by policy, one per group.
func (c *HTTP) Ingesting(ctx context.Context) ([]Filling, error) {
	var all []Filling
	for after := uint64(0); ; {
		var page struct {
			Aggregates []Filling `json:"aggregates"`
			Next       uint64    `json:"next,omitempty"`
		}
		q := url.Values{"state": {"INGESTING"}, "limit": {"1000"}, "after": {strconv.FormatUint(after, 10)}}
		if err := c.do(ctx, http.MethodGet, "/v1/aggregates?"+q.Encode(), nil, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Aggregates...)
		if page.Next == 0 {
			return all, nil
		}
		after = page.Next
	}
}
