package replicated

import (
	"log/slog"
	"net/netip"
	"testing"

	"github.com/sheepdog-go/sheepdog/core/proto"
)

// Every valid protocol port has gossip and raft defaults, distinct from it
// and from each other.
func TestDefaultPorts(t *testing.T) {
	for p := 1; p <= 65535; p++ {
		g, r := DefaultGossipPort(p), DefaultRaftPort(p)
		if g < 1 || g > 65535 || r < 1 || r > 65535 || g == r || g == p || r == p {
			t.Fatalf("port %d: gossip %d, raft %d", p, g, r)
		}
	}
	if g, r := DefaultGossipPort(7000), DefaultRaftPort(7000); g != 17000 || r != 27000 {
		t.Errorf("7000: %d %d, want the offsets added", g, r)
	}
	if g, r := DefaultGossipPort(65535), DefaultRaftPort(65535); g != 55535 || r != 45535 {
		t.Errorf("65535: %d %d", g, r)
	}
}

func TestValidatePorts(t *testing.T) {
	c := DefaultConfig()
	c.Dir, c.Log = t.TempDir(), slog.Default()
	c.Self = proto.Node{NodeID: proto.NodeIDFromAddrPort(netip.MustParseAddrPort("127.0.0.1:65535"))}
	if err := c.Validate(); err != nil {
		t.Errorf("port 65535: %v", err)
	}
	c.GossipPort, c.RaftPort = 5000, 5000
	if err := c.Validate(); err == nil {
		t.Error("equal gossip and raft ports accepted")
	}
	c.GossipPort, c.RaftPort = 5000, 5001
	if err := c.Validate(); err != nil {
		t.Errorf("explicit ports: %v", err)
	}
}
