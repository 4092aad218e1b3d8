// Package aggregator folds ferry's input log into its aggregate log: it
// decides which CARs form which FRC-0058 aggregate, when an aggregate closes,
// and how deal news moves it on.
//
// # The fold
//
// State.Apply(seq, input) returns the events.Batch of decisions the input causes
// and evolves the state by exactly those decisions (State.Evolve). Restart
// rebuilds the state by evolving every stored events.Batch in order, so
// whatever Apply knows it must have put into a decision or the batch's
// header (its input's sequence and the clock); a snapshot of the state
// (State.MarshalSnapshot, kept by Snapshots) lets it start from a later
// batch instead of the first.
//
// # Rules
//
//   - State.Evolve is the only place a decision changes the state. The
//     only other writes are the batch header's: the position (the last
//     input applied, set by Apply once the input is decided) and the clock
//     (set by a tick before the decisions that read it); Replay sets both
//     from a stored batch's header.
//   - Apply is deterministic: it reads no clock, randomness, map iteration
//     order or network. Time enters only as tick inputs. The same input log
//     under the same events.Settings yields the same aggregate log, byte for byte.
//   - Every input ends somewhere: a decision that changes state, a recorded
//     rejection or ignore with its reason, or (only for a tick that changes
//     nothing) no decision at all.
//   - A CAR is accepted once (deduplicated by CID at any distance in time)
//     and sits in at most one live aggregate.
//   - One writer: the Runner holds a lease and sends no append once the
//     lease could have expired (the fence); it appends each message with the
//     expected last sequence of the aggregate log and its last batch's
//     message id, sending it again until it settles; when another writer's
//     message is in the way another writer won, and the Runner steps down.
//   - A message holds the batches of inputs that were waiting together, in
//     input order, one per line; a batch is never split, and one that makes
//     deals is a message of its own. Grouping is timing, not a decision:
//     the byte-for-byte rule above holds for the batches.
//   - Grouping (events.Settings.GroupBy) is decided per CAR when it is
//     accepted: the value at that path of its source names its group
//     (events.GroupOf; none: the shared pool). Each group and the pool
//     have at most one INGESTING aggregate. A group's aggregate that has
//     not reached MinPayload when its oldest CAR has waited GroupMaxWait
//     is RELEASED at that tick: its CARs join the pool's aggregate in
//     arrival order (cars.requeued runs, closing the pool full between
//     them), groups in the order they opened. A failed deal's CARs go back
//     to the group the aggregate was filled for.
//   - A settings.change input changes the policy (MinPayload, MaxWait,
//     GroupBy, GroupMaxWait) from that input on, recorded as a log.settings
//     decision; a change of GroupBy releases every group's aggregate at
//     once, and the CARs still waiting for a piece join the pool. The rest
//     of the settings (events.Settings.Fixed) is the log's for good.
//   - A snapshot is a pure function of the log up to its message: it is
//     taken at the batch whose input crosses a multiple of SnapshotEvery
//     (SnapshotDue reads nothing else), that batch ends its message, and
//     the state it encodes is the state a replay up to it gives, in one
//     canonical encoding. Snapshots change no decision.
package aggregator
