package node

import (
	"github.com/ferry-dev/ferry/dashboard"
	"github.com/ferry-dev/ferry/fetchworker"
	"github.com/ferry-dev/ferry/packworker"
	"github.com/ferry-dev/ferry/pieceworker"
	"github.com/ferry-dev/ferry/workqueue"
)

// newDashboard is the page at GET / over this node's read models and work
// queues, under the API's read token.
func (n *Node) newDashboard() *dashboard.Dashboard {
	sub := n.cfg.Subjects
	return &dashboard.Dashboard{
		Store: n.Store, Pins: n.Pins, JS: n.JS,
		Queues:    []workqueue.Queue{pieceworker.Queue(sub), fetchworker.Queue(sub), packworker.Queue(sub)},
		Settings:  n.Settings,
		ReadToken: n.cfg.ReadToken, Log: n.log,
	}
}
