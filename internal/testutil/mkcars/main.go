// Command mkcars writes CARv1 files of seeded random raw blocks, for trying
// ferry out: go run ./internal/testutil/mkcars -n 20 -dir /tmp/cars
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/ferry-dev/ferry/internal/testutil"
)

func main() {
	n := flag.Int("n", 10, "number of CARs")
	dir := flag.String("dir", ".", "output directory")
	smallest := flag.Int("min", 100<<10, "smallest CAR size in bytes")
	largest := flag.Int("max", 2<<20, "largest CAR size in bytes")
	seed := flag.Uint64("seed", 1, "seed")
	flag.Parse()
	if err := run(*n, *dir, *smallest, *largest, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "mkcars:", err)
		os.Exit(1)
	}
}

func run(n int, dir string, smallest, largest int, seed uint64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	span := uint64(max(largest-smallest, 1))
	for i := range n {
		size := smallest + int((uint64(i)*2654435761+seed)%span)
		c, err := testutil.NewCAR(seed*1000+uint64(i), size)
		if err != nil {
			return err
		}
		p, err := c.WriteFile(dir)
		if err != nil {
			return err
		}
		fmt.Println(p)
	}
	return nil
}
