package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ferry-dev/ferry/events"
)

// SettingsChange is the body of POST /v1/settings: the policy settings
// to change (events.SettingsChange), each left out keeping its value.
type SettingsChange struct {
	MinPayload   *uint64   `json:"minPayload,omitempty"`
	MaxWait      *Duration `json:"maxWait,omitempty"`
	GroupBy      *string   `json:"groupBy,omitempty"` // a path into source, or "none"
	GroupMaxWait *Duration `json:"groupMaxWait,omitempty"`
	// By names who asks, for the record.
	By string `json:"by,omitempty"`
}

// SettingsChanged is what POST /v1/settings answers (202): the input
// log sequence of the settings.change, and the settings it makes from
// there on if the fold finds them as the server did.
type SettingsChanged struct {
	Status   string          `json:"status"`
	Seq      uint64          `json:"seq"`
	Settings events.Settings `json:"settings"`
	By       string          `json:"by"`
}

// Duration is a time.Duration in JSON as a Go duration string ("90m"),
// read from one or from a number of nanoseconds.
type Duration time.Duration

// UnmarshalJSON reads "90m" or 5400000000000.
func (d *Duration) UnmarshalJSON(data []byte) error {
	if bytes.HasPrefix(bytes.TrimSpace(data), []byte(`"`)) {
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*d = Duration(v)
		return nil
	}
	var ns int64
	if err := json.Unmarshal(data, &ns); err != nil {
		return fmt.Errorf("a duration is a string like \"90m\" or nanoseconds: %w", err)
	}
	*d = Duration(ns)
	return nil
}

// MarshalJSON writes the Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Ptr is d as the *time.Duration of an event, nil for nil.
func (d *Duration) Ptr() *time.Duration {
	if d == nil {
		return nil
	}
	v := time.Duration(*d)
	return &v
}
