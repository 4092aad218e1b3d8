// Package spade is ferry's whole deal flow: it turns a READY aggregate into
// an offer (the one offer builder, OfferOf, and ReadOffer over the read
// models), builds its FRC-58 manifest (ReadManifest, for the manifest
// route), offers it to a deal engine and records the outcome (Dealer,
// Offerer), reads the engine's reports (ParseReport, for the report
// route) and oracle documents (OraclePoller), and simulates an engine
// (Simulator). It speaks the deal-engine contract below; the fold decides
// what the outcomes mean.
//
// # The contract
//
// ferry POSTs an Offer (JSON) for each full aggregate to the engine's offer
// URL with "Authorization: Bearer <token>". The engine answers:
//
//   - 2xx: accepted; the body, if any, is {"accepted":true}.
//   - 4xx: refused for good, with {"error":"reason"}. 408 and 429 are the
//     exceptions: they mean "later" and are retried like a 5xx.
//   - 5xx or no answer: a transient failure; the offer is sent again.
//
// Later the engine POSTs a Report to the offer's reportUrl: status
// "published" or "active" with the deals made, or "failed" with a reason.
// An engine may also publish an oracle document (Spade's replica list) that
// ferry polls for active deals.
//
// # Rules
//
//   - An offer is built in one place, OfferOf, from the aggregate's layout
//     as the read models keep it (projections.Store.Layout): the dealer,
//     the manifest route and the tests all build offers and manifests
//     through it, so what is offered, what the manifest route serves and
//     what is tested cannot drift apart.
//   - Only READY aggregates are offered, and the read models say which are
//     READY. When to offer again after a missing report or a failed deal
//     is the fold's decision (aggregate.retry), not the dealer's; the
//     dealer itself retries only an offer the engine did not answer.
//   - Offering the same aggregate twice is harmless. An engine treats a
//     repeat offer of a piece it has already taken as the same offer, so
//     the Offerer may retry whenever it is unsure of the answer.
//   - Reports are facts about deals, not commands: the same report delivered
//     twice names the same deals, and ferry's fold dedupes them by provider
//     and deal id.
//   - ParseReport is the one definition of a well-formed report; the HTTP
//     front door calls it, so the engine's error names the same field the
//     fold would have rejected.
//   - Retries wait on a deterministic schedule (Backoff), never a random
//     one, so a test or an operator can predict when the next attempt comes.
//   - Bearer tokens are sent, compared and never logged or kept in errors.
//
// # The simulator
//
// Simulator is an engine for trying ferry out. It accepts offers, downloads
// every CAR, checks sizes, md5 and piece commitments, rebuilds the
// aggregate's bytes in the offered layout and recomputes its piece
// commitment, then reports made-up deals (or the reason it failed) after a
// delay. It keeps everything in memory; restarting it forgets its deals.
//
// # Caveats
//
// The simulator's byte-level check of an aggregate reads the whole deal, so
// it only runs up to SimConfig.MaxAssemble; above that it compares the
// commitment go-data-segment computes from the offered pieces instead, and
// says so in its log.
package spade
