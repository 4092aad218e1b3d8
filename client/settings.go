package client

import (
	"context"
	"encoding/json"
	"net/http"

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

// Ingesting lists the INGESTING aggregates, in id order: the shared
// pool's and, under a group-by policy, one per group (Group).
func (c *HTTP) Ingesting(ctx context.Context) ([]wire.AggregateView, error) {
	var all []wire.AggregateView
	for after := uint64(0); ; {
		page, err := c.Aggregates(ctx, "INGESTING", after, 1000)
		if err != nil {
			return nil, err
		}
		all = append(all, page.Aggregates...)
		if page.Next == 0 {
			return all, nil
		}
		after = page.Next
	}
}
