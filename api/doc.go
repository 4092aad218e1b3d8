// Package api is ferry's HTTP interface: reads answered from the read
// models (package projections), writes taken by publishing input events
// (package jetlog), the deal engine's reports (read with spade.ParseReport),
// FRC-58 manifests (spade.ReadManifest), the operator's orders, /healthz,
// and a directory of CAR files for `ferry serve --cars` (CarServer).
//
// # Rules
//
//   - The answer to a write is what the fold will do with it: an event the
//     fold would reject is refused with the fold's reason and not stored, a
//     copy of an accepted CAR is "duplicate" or "conflict", and a stored
//     event is "accepted" with its input log sequence.
//   - Every body is bounded in size and in how slowly it may arrive
//     (Limits); producers' writes and the deal engine's reports have
//     separate slots, so neither can crowd out the other.
//   - Writes need the write token, reports the report token; reads need
//     the read token when one is set. /healthz and /metrics stay open.
package api
