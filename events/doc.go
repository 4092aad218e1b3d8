// Package events is the wire format of ferry's two logs: the input events
// (their types, encoding and decoding, message ids, size bounds and
// validation) and the aggregate log's batches of decisions (Batch,
// Decision, Settings and their encoding), which the aggregator's fold
// writes and everything else reads. It knows nothing of NATS (package
// jetlog carries both logs on JetStream) and nothing of how decisions are
// made (package aggregator).
//
// # Rules
//
//   - Every event is one JSON object with "type" and "version"; unknown
//     fields are ignored, unknown types are rejected by the fold, never
//     dropped.
//   - Every event names its message id (MsgID), derived from the fact, so a retried publish inside the stream's duplicate window is
//     not a second event. Outside the window the fold dedupes by CAR CID.
//   - Validate is the one definition of a well-formed car.replicated; the
//     HTTP front door and the fold both call it, so the caller's error and
//     the recorded rejection always carry the same reason.
package events
