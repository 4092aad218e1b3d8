package seen

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
)

// A run file, all integers big-endian:
//
//	entries  count × (key [16]byte, kind byte, print uint64), keys ascending
//	filter   filterBlocks × 64 bytes
//	fence    the first key of every block of blockEntries entries
//	trailer  count u64, tombstones u64, filterBlocks u64,
//	         CRC-32C of filter and fence u32, magic [12]byte
//
// The filter and fence sit in the file so Open loads them with one read
// instead of scanning the entries.
const (
	entrySize    = 16 + 1 + 8
	blockEntries = 163 // 4,075 bytes: one page read per lookup
	trailerSize  = 8 + 8 + 8 + 4 + len(runMagic)
	runMagic     = "ferry-seen-1"

	kindPut  = 0
	kindTomb = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is returned for a run file or manifest that is not what its
// name or format says.
var ErrCorrupt = errors.New("seen: corrupt run or manifest")

// entry is one key of a run: a put with its print, or a tombstone.
type entry struct {
	key   [16]byte
	print uint64
	tomb  bool
}

func (e *entry) encode(b []byte) {
	copy(b, e.key[:])
	b[16] = kindPut
	if e.tomb {
		b[16] = kindTomb
	}
	binary.BigEndian.PutUint64(b[17:], e.print)
}

func decodeEntry(b []byte) (entry, error) {
	e := entry{key: [16]byte(b[:16]), print: binary.BigEndian.Uint64(b[17:])}
	switch b[16] {
	case kindPut:
	case kindTomb:
		e.tomb = true
	default:
		return e, fmt.Errorf("%w: entry kind %d", ErrCorrupt, b[16])
	}
	return e, nil
}

// run is an open run file: its entries stay on disk, its filter and
// fence in memory.
type run struct {
	name   string
	path   string
	f      *os.File
	count  uint64
	tombs  uint64
	filter filter
	fence  []byte // 16 bytes per block
}

func (r *run) blocks() uint64 { return uint64(len(r.fence) / 16) }

// get looks k up, reading at most one block into buf.
func (r *run) get(k *[16]byte, buf []byte) (e entry, ok bool, err error) {
	if !r.filter.mayHave(k) {
		return e, false, nil
	}
	nb := int(r.blocks())
	i := sort.Search(nb, func(i int) bool { return bytes.Compare(r.fence[i*16:i*16+16], k[:]) > 0 }) - 1
	if i < 0 {
		return e, false, nil
	}
	n := min(uint64(blockEntries), r.count-uint64(i)*blockEntries)
	b := buf[:n*entrySize]
	if _, err := r.f.ReadAt(b, int64(uint64(i)*blockEntries*entrySize)); err != nil {
		return e, false, fmt.Errorf("seen: run %s: %w", r.name, err)
	}
	j := sort.Search(int(n), func(j int) bool { return bytes.Compare(b[j*entrySize:j*entrySize+16], k[:]) >= 0 })
	if j == int(n) || !bytes.Equal(b[j*entrySize:j*entrySize+16], k[:]) {
		return e, false, nil
	}
	e, err = decodeEntry(b[j*entrySize:])
	return e, err == nil, err
}

func (r *run) close() error { return r.f.Close() }

// openRun opens the run file at path, named name, loading its filter and
// fence from the footer. It checks the footer's shape and checksum, not
// the entries: the caller verifies the whole file against its name.
func openRun(path, name string) (*run, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	r, err := readFooter(f, name)
	if err != nil {
		f.Close()
		return nil, err
	}
	r.path = path
	return r, nil
}

func readFooter(f *os.File, name string) (*run, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	if size < int64(trailerSize) {
		return nil, fmt.Errorf("%w: run %s is %d bytes", ErrCorrupt, name, size)
	}
	var t [trailerSize]byte
	if _, err := f.ReadAt(t[:], size-int64(trailerSize)); err != nil {
		return nil, err
	}
	if string(t[28:]) != runMagic {
		return nil, fmt.Errorf("%w: run %s has no trailer", ErrCorrupt, name)
	}
	r := &run{name: name, f: f,
		count: binary.BigEndian.Uint64(t[0:]), tombs: binary.BigEndian.Uint64(t[8:])}
	fblocks := binary.BigEndian.Uint64(t[16:])
	nblocks := (r.count + blockEntries - 1) / blockEntries
	footer := fblocks*filterBlockBytes + nblocks*16
	const limit = 1 << 50
	if r.count > limit || fblocks > limit || r.tombs > r.count ||
		uint64(size) != r.count*entrySize+footer+uint64(trailerSize) {
		return nil, fmt.Errorf("%w: run %s: sizes do not add up", ErrCorrupt, name)
	}
	buf := make([]byte, footer)
	if _, err := f.ReadAt(buf, int64(r.count*entrySize)); err != nil {
		return nil, err
	}
	if crc32.Checksum(buf, castagnoli) != binary.BigEndian.Uint32(t[24:]) {
		return nil, fmt.Errorf("%w: run %s: footer checksum", ErrCorrupt, name)
	}
	r.filter = filter(buf[:fblocks*filterBlockBytes])
	r.fence = buf[fblocks*filterBlockBytes:]
	return r, nil
}

// runWriter writes a run into dir: entries are added in ascending key
// order; finish writes the footer and renames the file to its name.
type runWriter struct {
	dir    string
	tmp    *os.File
	w      *bufio.Writer
	sum    hash.Hash
	filter filter
	fence  []byte
	count  uint64
	tombs  uint64
	last   [16]byte
	rec    [entrySize]byte
}

// newRunWriter starts a run of at most maxEntries entries (the filter's
// size is decided by it, so it must itself be a pure function of the ops).
func newRunWriter(dir string, maxEntries uint64) (*runWriter, error) {
	tmp, err := os.CreateTemp(dir, ".run-*")
	if err != nil {
		return nil, err
	}
	w := &runWriter{dir: dir, tmp: tmp, sum: sha256.New(), filter: newFilter(maxEntries)}
	w.w = bufio.NewWriterSize(io.MultiWriter(tmp, w.sum), ioBuffer(maxEntries))
	return w, nil
}

func (w *runWriter) add(e *entry) error {
	if w.count > 0 && bytes.Compare(e.key[:], w.last[:]) <= 0 {
		return fmt.Errorf("seen: run keys out of order")
	}
	if w.filter.blocks() < filterBlocks(w.count+1) {
		return fmt.Errorf("seen: run holds more entries than announced")
	}
	if w.count%blockEntries == 0 {
		w.fence = append(w.fence, e.key[:]...)
	}
	w.filter.add(&e.key)
	e.encode(w.rec[:])
	if e.tomb {
		w.tombs++
	}
	w.count++
	w.last = e.key
	_, err := w.w.Write(w.rec[:])
	return err
}

// finish completes the run and returns it open.
func (w *runWriter) finish() (*run, error) {
	crc := crc32.Update(crc32.Checksum(w.filter, castagnoli), castagnoli, w.fence)
	t := make([]byte, 0, trailerSize)
	t = binary.BigEndian.AppendUint64(t, w.count)
	t = binary.BigEndian.AppendUint64(t, w.tombs)
	t = binary.BigEndian.AppendUint64(t, w.filter.blocks())
	t = binary.BigEndian.AppendUint32(t, crc)
	t = append(t, runMagic...)
	for _, b := range [][]byte{w.filter, w.fence, t} {
		if _, err := w.w.Write(b); err != nil {
			return nil, w.abort(err)
		}
	}
	if err := w.w.Flush(); err != nil {
		return nil, w.abort(err)
	}
	if err := w.tmp.Sync(); err != nil {
		return nil, w.abort(err)
	}
	name := hex.EncodeToString(w.sum.Sum(nil))
	path := filepath.Join(w.dir, name)
	if err := os.Rename(w.tmp.Name(), path); err != nil {
		return nil, w.abort(err)
	}
	markChecked(path)
	// The file stays open for reading; the rename does not change it.
	return &run{name: name, path: path, f: w.tmp, count: w.count, tombs: w.tombs, filter: w.filter, fence: w.fence}, nil
}

func (w *runWriter) abort(err error) error {
	w.tmp.Close()
	os.Remove(w.tmp.Name())
	return err
}

// scanner reads a run's entries in order.
type scanner struct {
	r    *bufio.Reader
	left uint64
	rec  [entrySize]byte
	e    entry
	err  error
}

func (r *run) scan() *scanner {
	data := io.NewSectionReader(r.f, 0, int64(r.count*entrySize))
	return &scanner{r: bufio.NewReaderSize(data, ioBuffer(r.count)), left: r.count}
}

// ioBuffer is the buffer size for streaming n entries: up to 1 MiB,
// less for a small run (a checkpoint's run may hold a handful).
func ioBuffer(n uint64) int { return int(min(1<<20, max(4096, n*entrySize))) }

func (s *scanner) next() bool {
	if s.err != nil || s.left == 0 {
		return false
	}
	if _, s.err = io.ReadFull(s.r, s.rec[:]); s.err != nil {
		return false
	}
	s.e, s.err = decodeEntry(s.rec[:])
	s.left--
	return s.err == nil
}
