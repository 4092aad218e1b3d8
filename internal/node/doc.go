// Package node assembles a running ferry: the NATS connection (embedded
// server or an existing cluster), the streams, the aggregator, the read
// models, the deal parts, the piece workers and the HTTP API. `ferry serve`
// is a Node; so are end-to-end tests.
//
// # What node does and must not do
//
// Node connects parts that other packages define, supervises them and
// answers /healthz. It decides nothing about CARs, aggregates or deals:
// a rule that a test of another package could check belongs in that
// package (the fold in aggregator, offers and reports in spade, views in
// projections), and node only passes configuration and callbacks between
// them. Start assembles: it opens the read models first (their file lock
// stops a second ferry on the same data dir before it starts a NATS server
// there), connects to NATS, ensures the streams, reconciles the settings
// given with those on the aggregate log (aggregator.Reconcile), builds
// the parts and listens for HTTP. Start runs no part; Run starts them all
// and returns; Close stops them.
//
// # Goroutines and what each owns
//
// Run starts each part in a goroutine of its own (goRun), under its name
// in logs and in /healthz (docs/architecture.md has the full table, with
// the goroutines each part starts):
//
//   - aggregator: the aggregator.Runner, the only writer of the aggregate
//     log (it holds the lease) and the only owner of the fold's state.
//   - projector: the projections.Projector, the only writer of the read
//     models (bbolt). Its OnApplied callback runs in this goroutine: it
//     hands closed aggregates to the dealer and queued CARs to
//     piece-dispatch, and blocks the projector while piece-dispatch's
//     channel is full.
//   - piece-dispatch: puts queued CARs on the piece work queue, those the
//     read models hold at start and those the projector hands over.
//   - piece-workers: this process's piece workers (none with
//     Pieces.Workers < 0).
//   - receipts, dealer, oracle: the deal parts (receipts.Publisher,
//     spade.Dealer, spade.OraclePoller). Each publishes receipts, makes
//     offers or publishes reports only while this process leads
//     (Runner.Status().Leader), so that of several ferries on one log only
//     the leader does. dealer-resume offers the READY aggregates each time
//     this process gains the lead, once the read models have caught up.
//   - disk: watches free space, refuses publishes before JetStream meets a
//     full disk, and reopens an embedded JetStream once there is room
//     (disk.go).
//   - memory: returns memory to the system after a burst of inputs
//     (memory.go).
//   - projection-lag: follows how far the read models are behind the
//     aggregate log's last sequence as its stream leader holds it, for
//     /metrics and /healthz (lag.go).
//   - dashboard-rate: samples the read models' CAR count every 5 s for
//     the dashboard's ingest rate (package dashboard, dashboard.go).
//   - http: the API server and the dashboard.
//
// Parts share nothing but the read models (written by the projector alone,
// read by the others), the hand-offs above, the aggregator's leader status
// and the disk watch's gate on every publish; anything else one part tells
// another passes through NATS as an input event.
//
// # Restart rules
//
//   - A part that returns an error is restarted after a backoff: 1 s,
//     doubling to 30 s, and 1 s again after a run of more than a minute.
//     While it is down its error fails /healthz once the part has been
//     failing for longer than healthGrace (health.go: a stream electing a
//     leader stops parts on every ferry at once, and heals by itself); Err
//     keeps the first error since start. The other parts keep running.
//   - When the disk has room again (Node.retry), every part waiting out a
//     backoff starts again at once with its backoff reset.
//   - The aggregator and the projector are restarted at once, with no
//     error, when JetStream is reopened (Node.reopenable): their consumers
//     vanished with it, and a restart is what a crash would be, which both
//     are built for.
//   - A part that returns nil is done and is not restarted.
//   - Once the node's context ends nothing restarts: Close shuts the HTTP
//     server down, cancels every part, waits for all of them, then drains
//     NATS, closes the read models and stops an embedded server. It
//     returns the errors of the parts that were down at that moment.
package node
