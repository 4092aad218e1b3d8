// Package events is the wire format of ferry's input events: their types,
// encoding and decoding, their message ids, their size bounds and their
// validation. It knows nothing of NATS; package jetlog carries events on
// JetStream.
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
