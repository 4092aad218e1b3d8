package events_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ferry-dev/ferry/aggregator"
	"github.com/ferry-dev/ferry/events"
	"github.com/ferry-dev/ferry/jetlog"
)

// docsDeal is the deal size the examples of docs/events.md are valid for:
// ferry serve's default.
const docsDeal = 32 << 30

// codeBlock is one fenced block of a markdown file.
type codeBlock struct {
	lang string
	line int
	text string
}

// codeBlocks returns the fenced code blocks of a markdown document.
func codeBlocks(md string) []codeBlock {
	var (
		out  []codeBlock
		cur  *codeBlock
		body strings.Builder
	)
	for i, l := range strings.Split(md, "\n") {
		trimmed := strings.TrimSpace(l)
		switch {
		case cur == nil && strings.HasPrefix(trimmed, "```"):
			cur = &codeBlock{lang: strings.TrimPrefix(trimmed, "```"), line: i + 1}
			body.Reset()
		case cur != nil && trimmed == "```":
			cur.text = body.String()
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			body.WriteString(l)
			body.WriteByte('\n')
		}
	}
	return out
}

func readEventsDoc(t *testing.T) []codeBlock {
	t.Helper()
	md, err := os.ReadFile(filepath.Join("..", "docs", "events.md"))
	if err != nil {
		t.Fatalf("read docs/events.md: %v", err)
	}
	blocks := codeBlocks(string(md))
	if len(blocks) == 0 {
		t.Fatal("docs/events.md has no code blocks")
	}
	return blocks
}

var allTypes = []string{
	events.TypeCarReplicated, events.TypeCarPiece, events.TypeCarInvalid, events.TypeTick,
	events.TypeAggregateClose, events.TypeDealOffered, events.TypeOfferFailed, events.TypeDealReport,
	events.TypeAggReoffer, events.TypeAggFail, events.TypeSettingsChange,
	events.TypePinRequested, events.TypePinCancelled, events.TypePinFetching, events.TypePinFetched, events.TypePinFailed,
}

// checkEvent decodes one documented event and holds a car.replicated to
// Validate, so the docs never show an event ferry would reject.
func checkEvent(t *testing.T, where string, data []byte) events.Event {
	t.Helper()
	ev, err := events.Decode(data)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return nil
	}
	if cr, ok := ev.(*events.CarReplicated); ok {
		if err := cr.Validate(aggregator.DealRoom(docsDeal)); err != nil {
			t.Errorf("%s: car.replicated is invalid for a 32 GiB deal: %v", where, err)
		}
	}
	if v, ok := ev.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			t.Errorf("%s: %s is invalid: %v", where, ev.Kind(), err)
		}
	}
	return ev
}

func TestEventsDocJSONExamplesDecodeAndValidate(t *testing.T) {
	seen := map[string]bool{}
	for _, b := range readEventsDoc(t) {
		if b.lang != "json" {
			continue
		}
		var top map[string]json.RawMessage
		if err := json.Unmarshal([]byte(b.text), &top); err != nil {
			t.Errorf("docs/events.md:%d: json block does not parse: %v", b.line, err)
			continue
		}
		if _, ok := top["type"]; !ok {
			continue
		}
		if ev := checkEvent(t, "docs/events.md:"+strconv.Itoa(b.line), []byte(b.text)); ev != nil {
			seen[ev.Kind()] = true
		}
	}
	for _, typ := range allTypes {
		if !seen[typ] {
			t.Errorf("docs/events.md has no json example of %s", typ)
		}
	}
}

// natsPub is the one shape of publish command the docs use.
var natsPub = regexp.MustCompile(`^nats pub --jetstream (\S+) '([^']*)' -H '([^']*)'$`)

func TestEventsDocNatsCommandsPublishOnTheRightSubjectWithTheFactsMsgID(t *testing.T) {
	seen := map[string]bool{}
	for _, b := range readEventsDoc(t) {
		for i, l := range strings.Split(b.text, "\n") {
			l = strings.TrimSpace(l)
			if !strings.HasPrefix(l, "nats pub") {
				continue
			}
			where := "docs/events.md:" + strconv.Itoa(b.line+1+i)
			m := natsPub.FindStringSubmatch(l)
			if m == nil {
				t.Errorf("%s: %q is not `nats pub --jetstream SUBJECT 'JSON' -H 'Nats-Msg-Id:ID'`", where, l)
				continue
			}
			subject, body, header := m[1], m[2], m[3]
			ev := checkEvent(t, where, []byte(body))
			if ev == nil {
				continue
			}
			seen[ev.Kind()] = true
			if want := jetlog.DefaultSubjects.Input(ev.Kind()); subject != want {
				t.Errorf("%s: subject %s, want %s", where, subject, want)
			}
			if want := "Nats-Msg-Id:" + ev.MsgID(); header != want {
				t.Errorf("%s: header %q, want %q", where, header, want)
			}
		}
	}
	for _, typ := range allTypes {
		if !seen[typ] {
			t.Errorf("docs/events.md has no nats pub command for %s", typ)
		}
	}
}

// TestEventsDocAggregateLogExamplesUseTheBatchFields keeps the documented
// aggregate log in step with events.Batch and its decision types.
func TestEventsDocAggregateLogExamplesUseTheBatchFields(t *testing.T) {
	known := map[string]bool{}
	for _, typ := range []string{events.DecCarQueued, events.DecCarAdded, events.DecCarRejected,
		events.DecInputIgnored, events.DecAggClock, events.DecAggReady, events.DecAggOffered,
		events.DecAggOfferFailed, events.DecAggDeals, events.DecAggFailed, events.DecCarsRequeued, events.DecAggRetry,
		events.DecLogSettings, events.DecAggReleased} {
		known[typ] = true
	}
	n := 0
	for _, b := range readEventsDoc(t) {
		if (b.lang != "json" && b.lang != "jsonl") || !strings.Contains(b.text, `"decisions"`) {
			continue
		}
		// A jsonl block holds one batch a line, as the log stores them.
		dec := json.NewDecoder(strings.NewReader(b.text))
		dec.DisallowUnknownFields()
		for dec.More() {
			var batch events.Batch
			if err := dec.Decode(&batch); err != nil {
				t.Errorf("docs/events.md:%d: not an events.Batch: %v", b.line, err)
				break
			}
			n++
			if batch.In == 0 || len(batch.Decisions) == 0 {
				t.Errorf("docs/events.md:%d: a stored batch has an input sequence and decisions", b.line)
			}
			for _, d := range batch.Decisions {
				if !known[d.Type] {
					t.Errorf("docs/events.md:%d: unknown decision type %q", b.line, d.Type)
				}
			}
		}
	}
	if n == 0 {
		t.Error("docs/events.md has no aggregate log example")
	}
}
