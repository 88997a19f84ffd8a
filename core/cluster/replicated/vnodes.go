package replicated

import (
	"time"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// SetVnodes changes the vnode count this node gossips (SET_VNODES, dog's
// `node vnodes set`). In a cluster with fixed vnodes the leader then
// commits an epoch with the node's new count (nextEpoch, vnodeChange),
// and objects move as for any membership change. The count lasts until
// the sheep stops, as in Sheepdog.
func (d *Driver) SetVnodes(n uint16) {
	d.vnodes.Store(uint32(n) + 1)
	if d.ml != nil {
		go d.ml.UpdateNode(time.Second)
	}
	d.poke()
}

// self is this node as it is gossiped now: cfg.Self with SetVnodes' count.
func (d *Driver) self() proto.Node {
	n := d.cfg.Self
	if v := d.vnodes.Load(); v != 0 {
		n.NrVnodes = uint16(v - 1)
	}
	return n
}

// vnodeChange returns a live node that is in the epoch's nodes (cur) with
// another vnode count, which (with fixed vnodes) makes an epoch of its
// own. Pure: the first such node in live's order.
func vnodeChange(cur, live []proto.Node) (proto.Node, bool) {
	for _, l := range live {
		for _, c := range cur {
			if c.NodeID == l.NodeID && c.NrVnodes != l.NrVnodes {
				return l, true
			}
		}
	}
	return proto.Node{}, false
}
