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
	d.announce()
}

// Space is the space this node gossips (its node record's Space).
func (d *Driver) Space() uint64 { return d.self().Space }

// SetSpace changes the space this node gossips (REWEIGHT, dog's `cluster
// reweight`). The leader then commits an epoch with the node's new space
// (nextEpoch, spaceChange); with automatic vnodes every node's count is
// weighed again in it, and objects move as for any membership change.
func (d *Driver) SetSpace(space uint64) {
	d.space.Store(&space)
	d.announce()
}

// announce gossips this node's changed record and wakes reconcile.
func (d *Driver) announce() {
	if d.ml != nil {
		go d.ml.UpdateNode(time.Second)
	}
	d.poke()
}

// self is this node as it is gossiped now: cfg.Self with SetVnodes' count
// and SetSpace's space.
func (d *Driver) self() proto.Node {
	n := d.cfg.Self
	if v := d.vnodes.Load(); v != 0 {
		n.NrVnodes = uint16(v - 1)
	}
	if s := d.space.Load(); s != nil {
		n.Space = *s
	}
	return n
}

// vnodeChange returns a live node that is in the epoch's nodes (cur) with
// another vnode count, which (with fixed vnodes) makes an epoch of its
// own. Pure: the first such node in live's order.
func vnodeChange(cur, live []proto.Node) (proto.Node, bool) {
	return changed(cur, live, func(c, l proto.Node) bool { return c.NrVnodes != l.NrVnodes })
}

// spaceChange returns a live node that is in the epoch's nodes (cur) with
// another space (a reweight), which makes an epoch of its own, as
// Sheepdog's update_node does. Pure: the first such node in live's order.
func spaceChange(cur, live []proto.Node) (proto.Node, bool) {
	return changed(cur, live, func(c, l proto.Node) bool { return c.Space != l.Space })
}

// changed returns the first node of live that is in cur and differs from
// its record there by differ.
func changed(cur, live []proto.Node, differ func(c, l proto.Node) bool) (proto.Node, bool) {
	for _, l := range live {
		for _, c := range cur {
			if c.NodeID == l.NodeID && differ(c, l) {
				return l, true
			}
		}
	}
	return proto.Node{}, false
}
