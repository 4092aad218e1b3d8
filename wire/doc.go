// Package wire is the JSON of ferry's HTTP API and receipts: what GET
// /v1/cars and /v1/aggregates answer, the answer to each event of POST
// /v1/cars, and the receipt published for each CAR with deals.
//
// # Rules
//
//   - Only types and their JSON: no behaviour, and no dependency heavier
//     than the events they embed, so that a client of the API (package
//     client) links none of ferry's storage, CAR or commitment libraries.
//   - A field not yet known is absent, never zero-valued: a client tells
//     "no aggregate yet" from "aggregate 0".
package wire
