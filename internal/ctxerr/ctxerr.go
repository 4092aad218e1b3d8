// Package ctxerr tells a part that stopped from a part that failed: a loop
// whose context ended returns whatever error the cancellation caused in
// whatever it was reading, and its caller (node's restart loop, a command)
// must see that as a clean stop, not as a failure to report or restart.
package ctxerr

import "context"

// NilIfDone returns nil once ctx has ended, and err otherwise.
func NilIfDone(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}
