package replicated

import (
	"crypto/tls"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// tlsStream is raft's stream layer over mutual TLS (a cluster key): the
// listener requires a client certificate of the cluster's CA, and dials
// present this node's and check the other's.
type tlsStream struct {
	net.Listener
	advertise net.Addr
	client    *tls.Config
}

// Addr is the address raft advertises, not the bound one.
func (s *tlsStream) Addr() net.Addr { return s.advertise }

// Dial opens a TLS connection to a raft peer.
func (s *tlsStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	return tls.DialWithDialer(d, "tcp", string(addr), s.client)
}
