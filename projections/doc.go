// Package projections keeps ferry's read models — where every CAR is, what
// every aggregate holds — in bbolt, built from the aggregate log, and serves
// them over HTTP.
//
// # Rules
//
//   - The read models are disposable: they hold nothing the aggregate log
//     does not, and Replay rebuilds them from it with the same answers.
//   - Each write transaction stores the aggregate log sequence it applied
//     together with the data, so a crash never applies a batch twice or
//     skips one.
//   - Inclusion proofs are a function of an aggregate's layout. The store
//     computes them when it applies aggregate.ready and checks that the
//     layout it derived gives the piece CID the aggregator decided; a
//     mismatch stops the projection rather than serve a wrong proof.
package projections
