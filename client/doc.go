// Package client is the Go client of ferry for a storage service. It has
// three jobs, each with an example:
//
//  1. Publish: one car.replicated event per CAR replicated to public
//     storage, on NATS with [NewPublisher] (JetStream stores it, with the
//     CAR CID as message id) or over HTTP with [HTTP.Submit] (ferry
//     answers each event: accepted, duplicate, rejected with a reason,
//     conflict).
//  2. Read state: where a CAR is, in which aggregate, with which deals
//     and inclusion proof, over HTTP ([HTTP.Car], [HTTP.Aggregate],
//     [HTTP.Aggregates]); or the whole history from the aggregate log
//     itself with [Replay], to rebuild a service's own state.
//  3. Follow receipts: one deal receipt per CAR once its aggregate has
//     deals, with [SubscribeReceipts] from a position that survives
//     restarts (a durable consumer, or a stream sequence the service
//     stores).
//
// ferry serve writes the NKey seeds of its NATS users into its data
// directory (nats/publish.nk may publish inputs and read receipts;
// nats/admin.nk may do everything); connect with
// nats.NkeyOptionFromSeed. The HTTP API takes ferry serve's tokens in
// [HTTP.Token].
//
// # Rules
//
//   - Publishing is idempotent by CAR CID: a retried publish is not a
//     second CAR.
//   - Reads over HTTP see the read models, which trail the aggregate log
//     by moments; Replay reads the log itself.
//   - The package links a NATS client and ferry's wire types, nothing of
//     ferry's server, storage or CAR libraries (deps_test.go), and its
//     examples import only public packages (example_outside_test.go
//     builds them in a module of their own).
package client
