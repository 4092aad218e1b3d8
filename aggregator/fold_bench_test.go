package aggregator

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/internal/testutil"
)

// BenchmarkFoldCars is the fold's cost per input on a stream of CARs with
// their pieces from 1,000 tenants, a tick every 100 CARs, ungrouped and
// grouped by space: what grouping adds to every car.replicated (reading
// the group from its source, one INGESTING aggregate per group, the
// release clock).
//
//	go test ./aggregator -run '^$' -bench FoldCars -count 6 | benchstat -
func BenchmarkFoldCars(b *testing.B) {
	const tenants = 1000
	inputs := make([][]byte, 0, 20_000)
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for i := range cap(inputs) {
		if i%100 == 0 {
			inputs = append(inputs, testutil.MustEncode(&events.Tick{Time: t0.Add(time.Duration(i) * time.Second)}))
			continue
		}
		e := testutil.Replicated(i, 1+uint64(i*7919)%(16<<10), true)
		e.Source = json.RawMessage(fmt.Sprintf(`{"account":"did:mailto:example.com:user-%d","space":"did:key:z6Mk%040d","upload":"bafy-upload-%d"}`,
			i%tenants/10, i%tenants, i))
		inputs = append(inputs, testutil.MustEncode(e))
	}
	for _, groupBy := range []string{"", "source.space"} {
		name := "groupBy=none"
		if groupBy != "" {
			name = "groupBy=" + groupBy
		}
		b.Run(name, func(b *testing.B) {
			cfg := events.Settings{DealSize: 1 << 20, MinPayload: 512 << 10, MaxWait: time.Hour, GroupBy: groupBy, GroupMaxWait: 2 * time.Hour}
			b.ReportAllocs()
			var st *State
			var seq uint64
			for i := 0; b.Loop(); i++ {
				if i%len(inputs) == 0 {
					st, seq = New(cfg), 0 // a fresh log: the dedupe set would refuse the CARs again
				}
				seq++
				st.Apply(seq, inputs[i%len(inputs)])
			}
		})
	}
}
