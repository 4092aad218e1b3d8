package pack

import (
	"io"
	"sync"
)

// asyncWriter buffers writes like a bufio.Writer, but a full buffer is
// written by a goroutine of its own while the next one fills: the
// kernel's copy of a CAR's bytes into the page cache then runs beside
// the reading and hashing of the next leaves instead of between them.
// Write and close are called by one goroutine.
type asyncWriter struct {
	w    io.Writer
	buf  []byte      // being filled
	full chan []byte // to the writing goroutine
	free chan []byte // written, back from it
	done chan struct{}

	mu  sync.Mutex
	err error // the first write error
}

// asyncBuffers is how many buffers a writer has: one filling and up to
// two being written, so a slow write does not stop the hashing at once.
const asyncBuffers = 3

func newAsyncWriter(w io.Writer, size int) *asyncWriter {
	a := &asyncWriter{
		w: w, buf: make([]byte, 0, size),
		full: make(chan []byte, asyncBuffers), free: make(chan []byte, asyncBuffers),
		done: make(chan struct{}),
	}
	for range asyncBuffers - 1 {
		a.free <- make([]byte, 0, size)
	}
	go a.run()
	return a
}

func (a *asyncWriter) run() {
	defer close(a.done)
	for b := range a.full {
		if a.error() == nil {
			if _, err := a.w.Write(b); err != nil {
				a.mu.Lock()
				a.err = err
				a.mu.Unlock()
			}
		}
		a.free <- b[:0]
	}
}

func (a *asyncWriter) error() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

func (a *asyncWriter) Write(p []byte) (int, error) { return write(a, p) }

// WriteString is Write without converting s.
func (a *asyncWriter) WriteString(s string) (int, error) { return write(a, s) }

func write[T string | []byte](a *asyncWriter, p T) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if len(a.buf) == cap(a.buf) {
			if err := a.send(); err != nil {
				return n - len(p), err
			}
		}
		k := copy(a.buf[len(a.buf):cap(a.buf)], p)
		a.buf, p = a.buf[:len(a.buf)+k], p[k:]
	}
	return n, nil
}

// send hands the filled buffer to the goroutine and takes a free one.
func (a *asyncWriter) send() error {
	if err := a.error(); err != nil {
		return err
	}
	a.full <- a.buf
	a.buf = <-a.free
	return nil
}

// close writes what is buffered, waits until every write is done and
// stops the goroutine; it returns the first write error. The writer is
// not used after, and close may be called again.
func (a *asyncWriter) close() error {
	if a.full != nil {
		if len(a.buf) > 0 {
			a.full <- a.buf
		}
		close(a.full)
		<-a.done
		a.full = nil
	}
	return a.error()
}
