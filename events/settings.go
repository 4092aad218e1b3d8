package events

import (
	"fmt"
	"reflect"
	"strings"
	"time"
)

// Settings decides the fold: the same inputs under the same Settings give
// the same decisions. It is the log's settings: the fold records it in the
// first batch it decides (a log.settings decision), and a state rebuilt
// from the log takes it from there (see LogSettings). The aggregation
// policy (MinPayload, MaxWait, GroupBy, GroupMaxWait) may change from a
// given input on, by a settings.change input that the fold records as
// another log.settings decision; the rest (Fixed) is the log's for good.
type Settings struct {
	// DealSize is the padded deal size, a power of two.
	DealSize uint64 `json:"dealSize"`
	// MinPayload is the CAR bytes an aggregate needs before max-wait may
	// close it.
	MinPayload uint64 `json:"minPayload"`
	// MaxWait is how long the oldest CAR of an aggregate may wait once the
	// aggregate holds MinPayload.
	MaxWait time.Duration `json:"maxWait"`
	// VerifyPieces sends CARs that arrive with a claimed piece CID through
	// the piece workers too; a computed piece that differs rejects the CAR.
	VerifyPieces bool `json:"verifyPieces,omitempty"`
	// MaxTickAhead bounds how far a tick's time may be ahead of the time
	// the input log stored it (0: no bound). A tick beyond it is ignored,
	// with the reason: a tick from a wrong clock (or a forged one) would
	// otherwise close aggregates early and freeze the clock there.
	MaxTickAhead time.Duration `json:"maxTickAhead,omitempty"`
	// DealTimeout is how long a DEAL_PENDING aggregate waits for a deal
	// report, in tick time, before it is offered again; zero waits forever.
	DealTimeout time.Duration `json:"dealTimeout,omitzero"`
	// MaxOffers bounds the offers of one set of CARs: the failed or
	// unanswered offer that reaches it makes the aggregate DEAL_FAILED for
	// good, keeping its CARs. Zero means no bound.
	MaxOffers int `json:"maxOffers,omitzero"`
	// OfferBackoff is how long the CARs of a failed deal wait before they
	// are aggregated (and so offered) again, doubled by each earlier
	// failure of theirs; zero requeues them at once.
	OfferBackoff time.Duration `json:"offerBackoff,omitzero"`
	// GroupBy is the path into a car.replicated's source whose value names
	// the CAR's group ("source.space"); each group fills an INGESTING
	// aggregate of its own. "" (the default) folds every CAR into one
	// stream. See GroupOf.
	GroupBy string `json:"groupBy,omitempty"`
	// GroupMaxWait is how long a group's INGESTING aggregate may hold its
	// CARs without reaching MinPayload: at a tick past it, they are
	// released into the shared pool, in arrival order. Zero never
	// releases them.
	GroupMaxWait time.Duration `json:"groupMaxWait,omitzero"`
}

// PolicyNames are the JSON names of the settings a settings.change may
// change: those Fixed zeroes.
var PolicyNames = []string{"minPayload", "maxWait", "groupBy", "groupMaxWait"}

// Fixed is what of c no settings.change may change: a log's aggregates,
// pieces and deal clocks were all decided under it.
func (c Settings) Fixed() Settings {
	c.MinPayload, c.MaxWait, c.GroupBy, c.GroupMaxWait = 0, 0, "", 0
	return c
}

// String spells the settings by their JSON names.
func (c Settings) String() string {
	v := reflect.ValueOf(c)
	parts := make([]string, v.NumField())
	for i := range v.NumField() {
		name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("json"), ",")
		if f := v.Field(i); f.Kind() == reflect.String && f.String() == "" {
			parts[i] = name + " " + GroupNone // groupBy: one stream
			continue
		}
		parts[i] = fmt.Sprintf("%s %v", name, v.Field(i))
	}
	return strings.Join(parts, ", ")
}
