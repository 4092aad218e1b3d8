package node

import (
	"github.com/ferry-dev/ferry/dashboard"
	"github.com/ferry-dev/ferry/workqueue"
)

// newDashboard is the page at GET / over this node's read models and work
// queues, under the API's read token.
func (n *Node) newDashboard() *dashboard.Dashboard {
	var queues []workqueue.Queue
	for _, q := range workQueues(n.cfg.Subjects) {
		queues = append(queues, q.Queue)
	}
	return &dashboard.Dashboard{
		Store: n.Store, Pins: n.Pins, JS: n.JS,
		Queues:    queues,
		Settings:  n.Settings,
		PieceWork: n.API.PieceWork,
		ReadToken: n.cfg.ReadToken, WriteToken: n.cfg.WriteToken, Log: n.log,
	}
}
