// Package carstore keeps the CAR files ferry makes (fetched pins, packed
// trees) where deal engines can download them, and says at which URL.
//
// # Rules
//
//   - A CAR is written to a spool file first and stored under its CAR CID
//     only when it is complete and verified (Put): a reader never sees a
//     partial CAR under a CAR's name, and a failed or cancelled write
//     leaves nothing behind but what Discard removes.
//   - Storing is idempotent: a CAR is named by the hash of its bytes, so a
//     second Put of the same CAR keeps the first and discards the spool.
//   - Spool files are local (the verifier reads duplicate blocks back from
//     them), whatever the store: Dir spools in its own directory, so Put
//     is a rename; a remote store uploads the spool file on Put.
//   - Spool files left by a process that died mid-write are removed by
//     Sweep, which removes only those older than the age it is given.
//
// Two stores: Dir, a directory ferry serves itself, and S3, an
// S3-compatible bucket read at its public URL. Open picks one from a
// --car-store spec.
package carstore

import (
	"context"
	"errors"
	"io"
	"os"

	"github.com/ipfs/go-cid"
)

// ErrNotFound is returned for a CAR the store does not hold.
var ErrNotFound = errors.New("carstore: no such CAR")

// Store is where CARs are kept. It is safe for concurrent use, by several
// processes too (two Puts of one CAR store it once).
type Store interface {
	// Spool creates a local temp file to write a CAR into.
	Spool() (*os.File, error)
	// Put stores the spooled CAR f under car and removes the spool file
	// (renaming it into place where it can). f may be open or closed.
	Put(ctx context.Context, car cid.Cid, f *os.File) error
	// Discard removes a spool file that will not be stored.
	Discard(f *os.File) error
	// Stat returns the size of a stored CAR, or ErrNotFound.
	Stat(ctx context.Context, car cid.Cid) (int64, error)
	// Open reads a stored CAR, or returns ErrNotFound.
	Open(ctx context.Context, car cid.Cid) (io.ReadCloser, error)
	// URL is the public URL of a stored CAR, put into its car.replicated.
	URL(car cid.Cid) string
}

// Name is the file or object name of a CAR: its CID and ".car".
func Name(car cid.Cid) string { return car.String() + ".car" }
