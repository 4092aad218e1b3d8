// Package jetlog is ferry's logs on NATS JetStream: the streams and their
// subjects (EnsureStreams, Subjects), appending events to the input log
// (Publisher), and reading a log in order (Tail).
//
// # Rules
//
//   - The stream names are fixed, so an operator finds them with a stock
//     NATS client; only the subject prefix is configurable.
//   - FERRY_IN stores an input once per message id within its duplicate
//     window (the event's id, bounded by events.BoundedID); it refuses a
//     message over events.MaxInputBytes, so NATS producers are held to the
//     size bound by the server itself.
//   - Tail delivers a log's messages in sequence order, each once, and ends
//     at the log's last message unless asked to follow; the caller checks
//     for gaps where it must vouch for having read everything. It follows a
//     stream's new leader at once: its consumer is made again from the next
//     sequence on the leader-elected advisory, a reconnect, or a silence
//     while the leader holds more.
//   - Publish sends a message again while it is unanswered, within
//     AckWait; the stream's duplicate window stores it once.
//   - The end of a log is its last sequence as the stream's leader holds
//     it (LastSeq), never a consumer's "nothing pending", which speaks for
//     the replica the consumer sits on. A read that cannot reach the end
//     fails with a *BehindError saying how far it got; it never returns a
//     prefix as the whole log.
//   - A full disk is an error of its own (ErrStorageFull, IsStorageFull),
//     so that callers answer "disk full" instead of a timeout.
package jetlog
