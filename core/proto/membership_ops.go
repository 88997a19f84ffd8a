package proto

// Internal ops of membership (not in Sheepdog), next to OpPunchPeer.
const (
	// OpGetGossipNodes answers, like GET_NODE_LIST, with the nodes failure
	// detection sees alive now, which GET_NODE_LIST does not show: it
	// lists the membership the cluster decided (the current epoch's).
	OpGetGossipNodes Opcode = 0xF8
	// OpStopNode stops the receiving sheep: `cluster shutdown` sends it to
	// every node it can see when there is no leader to order a SHUTDOWN
	// entry (no quorum).
	OpStopNode Opcode = 0xF9
)
