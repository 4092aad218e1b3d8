package carcheck

import (
	"bytes"
	"errors"
	"io"
	"testing"

	car "github.com/ipld/go-car/v2"
)

// FuzzCheck holds Check to two rules on any bytes: it fails only with an
// InvalidError (the reader here cannot fail), and what it accepts go-car
// reads as the same number of verified blocks.
func FuzzCheck(f *testing.F) {
	v1 := makeCAR(f, 20, 2<<10)
	f.Add(v1)
	f.Add(wrapV2(f, v1, 0))
	f.Add(v1[:len(v1)/2])
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := Check(bytes.NewReader(data), CheckOptions{})
		if err != nil {
			if !IsInvalid(err) {
				t.Fatalf("not an InvalidError: %v", err)
			}
			return
		}
		if n, err := goCarBlocks(data); err != nil || n != res.Blocks {
			t.Fatalf("Check accepted %d blocks; go-car read %d: %v", res.Blocks, n, err)
		}
	})
}

// goCarBlocks counts the blocks go-car reads and verifies.
func goCarBlocks(data []byte) (int, error) {
	br, err := car.NewBlockReader(bytes.NewReader(data))
	if err != nil {
		return 0, err
	}
	for n := 0; ; n++ {
		if _, err := br.Next(); errors.Is(err, io.EOF) {
			return n, nil
		} else if err != nil {
			return n, err
		}
	}
}
