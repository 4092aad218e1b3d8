// Package events defines ferry's input events: their wire format, the
// subjects and streams they travel on, their validation, and the publisher
// that appends them to the input log.
//
// # Rules
//
//   - Every event is one JSON object with "type" and "version"; unknown
//     fields are ignored, unknown types are rejected by the fold, never
//     dropped.
//   - Publishing is idempotent: the Nats-Msg-Id is derived from the fact
//     (MsgID), so a retried publish inside the stream's duplicate window is
//     not a second event. Outside the window the fold dedupes by CAR CID.
//   - Validate is the one definition of a well-formed car.replicated; the
//     HTTP front door and the fold both call it, so the caller's error and
//     the recorded rejection always carry the same reason.
package events
