// Package whatif answers "what would policy X have done with our
// traffic?": it folds a recorded input log in memory under one or more
// policies (fold settings: deal size, min payload, max wait, group-by,
// group max wait) with the aggregator's own fold, and reports per policy
// the aggregates made and their fill, the CARs' time from acceptance to
// READY, the CARs still waiting at the end, the deals that would have
// been offered, the alignment waste of the FRC-0058 layout, and for a
// grouped policy the same per group.
//
// # Rules
//
//   - It only reads: the input log is read by an ephemeral consumer
//     (ReadLog); nothing is appended to any stream and no read model is
//     touched. Each policy folds into a State of its own, in memory.
//   - The fold is aggregator.State itself, under the policy's settings:
//     what a policy would have done is what ferry serve under those
//     settings would decide for the same inputs, not a model of it.
//   - Inputs whose meaning depends on a live aggregate id or on the world's
//     answer to a live deal cannot be replayed against other aggregates:
//     deal.offered, deal.offer_failed, deal.report, aggregate.close,
//     aggregate.reoffer and aggregate.fail are skipped and counted
//     (Report.Skipped). So every closed aggregate stays READY: it is the
//     deal that would have been offered, and a CAR's wait ends at READY.
//     Failed deals and their re-queued CARs are outside what a what-if says.
//   - A grouped policy's decisions are followed as the fold makes them:
//     several INGESTING aggregates at once (the shared pool's and one per
//     group), a group's aggregate released into the pool at its group max
//     wait (RELEASED: not a deal), and the cars.requeued runs that move its
//     CARs into the pool's aggregates. A CAR keeps its acceptance clock
//     and its group wherever it goes: its time to READY counts from its
//     acceptance, and the per-group figures count it in its own group.
//   - settings.change inputs are what the operator did to ferry: the
//     recorded policy folds them, as ferry did; every alternative policy
//     holds its settings fixed (Policy.HoldSettings) and skips them, counted per
//     policy (Outcome.Skipped), not in Report.Skipped.
//   - Time is the log's own: the fold's clock, which only tick inputs move.
//     A CAR's time to READY is the clock at its aggregate's READY minus the
//     clock when it was accepted (a CAR accepted before the first tick
//     counts from the first tick), so its resolution is the tick interval.
//   - Fill is an aggregate's payload (CAR bytes) over its deal's unpadded
//     capacity (piece.Unpadded of the deal size). Alignment waste is the
//     padded piece sizes minus the payload, plus any gaps the FRC-0058
//     layout (frc58.Layout, each piece at a multiple of its size) leaves.
//   - The report is deterministic: the same log and policies give the same
//     report, byte for byte, in every format. It holds no wall clock, and
//     every list is in a fixed order (policies as given, aggregates by id).
package whatif
