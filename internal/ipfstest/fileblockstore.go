package ipfstest

import (
	"context"
	"io"
	"os"
	"sync"
	"testing"

	ipld "github.com/ipfs/go-ipld-format"

	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
)

// FileBlockstore is a blockstore whose blocks live in one file (only an
// index of offsets is in memory), for DAGs too large to hold: the
// benchmarks serve a gigabyte from it. Deleted blocks' bytes stay in the
// file.
type FileBlockstore struct {
	mu    sync.RWMutex
	f     *os.File
	end   int64
	index map[string]fileSpan // by multihash
}

type fileSpan struct {
	off int64
	n   int
	c   cid.Cid
}

// NewFileBlockstore creates the store's file in the test's temp dir.
func NewFileBlockstore(t testing.TB) *FileBlockstore {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "blocks-*")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &FileBlockstore{f: f, index: map[string]fileSpan{}}
}

func (s *FileBlockstore) span(c cid.Cid) (fileSpan, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sp, ok := s.index[string(c.Hash())]
	return sp, ok
}

func (s *FileBlockstore) DeleteBlock(_ context.Context, c cid.Cid) error {
	s.mu.Lock()
	delete(s.index, string(c.Hash()))
	s.mu.Unlock()
	return nil
}

func (s *FileBlockstore) Has(_ context.Context, c cid.Cid) (bool, error) {
	_, ok := s.span(c)
	return ok, nil
}

func (s *FileBlockstore) Get(_ context.Context, c cid.Cid) (blocks.Block, error) {
	sp, ok := s.span(c)
	if !ok {
		return nil, ipld.ErrNotFound{Cid: c}
	}
	data := make([]byte, sp.n)
	if _, err := s.f.ReadAt(data, sp.off); err != nil && err != io.EOF {
		return nil, err
	}
	return blocks.NewBlockWithCid(data, c)
}

func (s *FileBlockstore) GetSize(_ context.Context, c cid.Cid) (int, error) {
	sp, ok := s.span(c)
	if !ok {
		return -1, ipld.ErrNotFound{Cid: c}
	}
	return sp.n, nil
}

func (s *FileBlockstore) Put(_ context.Context, b blocks.Block) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.index[string(b.Cid().Hash())]; ok {
		return nil
	}
	n, err := s.f.WriteAt(b.RawData(), s.end)
	if err != nil {
		return err
	}
	s.index[string(b.Cid().Hash())] = fileSpan{s.end, n, b.Cid()}
	s.end += int64(n)
	return nil
}

func (s *FileBlockstore) PutMany(ctx context.Context, bs []blocks.Block) error {
	for _, b := range bs {
		if err := s.Put(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

func (s *FileBlockstore) AllKeysChan(ctx context.Context) (<-chan cid.Cid, error) {
	s.mu.RLock()
	keys := make([]cid.Cid, 0, len(s.index))
	for _, sp := range s.index {
		keys = append(keys, sp.c)
	}
	s.mu.RUnlock()
	ch := make(chan cid.Cid)
	go func() {
		defer close(ch)
		for _, k := range keys {
			select {
			case ch <- k:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch, nil
}
