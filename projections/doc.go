// Package projections keeps ferry's read models — where every CAR is, what
// every aggregate holds — in bbolt, built from the aggregate log by the
// Projector; package api serves them over HTTP.
//
// # Rules
//
//   - The read models are disposable: they hold nothing the aggregate log
//     does not, and Replay rebuilds them from it with the same answers.
//   - Each write transaction stores the aggregate log sequence it applied
//     together with the data, so a crash never applies a batch twice or
//     skips one.
//   - Inclusion proofs are a function of an aggregate's layout. When it
//     applies aggregate.ready the store lays the members out, builds the
//     tree and checks that it gives the piece CID the aggregator decided (a
//     mismatch stops the projection rather than serve a wrong proof); it
//     stores the layout and the tree, and derives each CAR's position,
//     offset and proof from them when read. Closing never rewrites a CAR.
//   - A committed CAR is always found by its CID (see cidIndex).
package projections
