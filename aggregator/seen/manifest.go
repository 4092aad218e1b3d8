package seen

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// Manifest is the canonical text naming an index's runs, oldest first,
// and its number of keys:
//
//	ferry-seen 1
//	keys <n>
//	run <sha256 hex>
//	...
//
// It is a pure function of the ops and checkpoints that made the index.
type Manifest []byte

const manifestHead = "ferry-seen 1\n"

func encodeManifest(runs []*run, keys int) Manifest {
	var b bytes.Buffer
	b.WriteString(manifestHead)
	fmt.Fprintf(&b, "keys %d\n", keys)
	for _, r := range runs {
		fmt.Fprintf(&b, "run %s\n", r.name)
	}
	return b.Bytes()
}

// parse returns the manifest's run names and key count.
func (m Manifest) parse() (names []string, keys int, err error) {
	bad := func(why string) error { return fmt.Errorf("%w: manifest: %s", ErrCorrupt, why) }
	text, ok := strings.CutPrefix(string(m), manifestHead)
	if !ok || !strings.HasSuffix(text, "\n") {
		return nil, 0, bad("not a seen manifest")
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	n, ok := strings.CutPrefix(lines[0], "keys ")
	if !ok {
		return nil, 0, bad("no key count")
	}
	if keys, err = strconv.Atoi(n); err != nil || keys < 0 || strconv.Itoa(keys) != n {
		return nil, 0, bad("key count " + strconv.Quote(n))
	}
	for _, l := range lines[1:] {
		name, ok := strings.CutPrefix(l, "run ")
		if !ok || !validName(name) {
			return nil, 0, bad("line " + strconv.Quote(l))
		}
		names = append(names, name)
	}
	return names, keys, nil
}

// validName says whether name is a run's name: lower-case hex SHA-256.
func validName(name string) bool {
	b, err := hex.DecodeString(name)
	return err == nil && len(b) == 32 && hex.EncodeToString(b) == name
}

// Keys is the number of keys of the index m describes.
func (m Manifest) Keys() (int, error) {
	_, n, err := m.parse()
	return n, err
}
