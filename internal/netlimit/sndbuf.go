package netlimit

import "net"

// loopbackSendBuffer is the send buffer of a connection from this host
// (SO_SNDBUF; Linux doubles it for its own overhead). Left to autotuning,
// a loopback socket's buffer grows to 4 MiB (tcp_wmem), and the replies
// queued in it go cold in the CPU caches before the client copies them
// out: fio's copy of 1 MiB NBD read replies cost 1.65 times what it
// does from nbdkit, per MiB (perf, same minutes). Capped, 1-node 1 MiB
// NBD reads at depth 8 ran at 0.98-1.01x of nbdkit against 0.76-0.80x,
// and 4 KiB random reads as before; 1 MiB (2 MiB in the kernel) was no
// better than autotuning, 128 KiB worse. The kernel clamps the request
// to net.core.wmem_max (212992 unless raised; 4 MiB on the development
// VM), so a stock kernel gives 416 KiB. A remote client keeps autotuning:
// its buffer has to cover the link's bandwidth-delay product.
const loopbackSendBuffer = 512 << 10

// keepSendBufferSmall caps the send buffer of tc if its peer is on this
// host: a loopback address, or the address it reached us at
// (loopbackSendBuffer).
func keepSendBufferSmall(tc *net.TCPConn) {
	r, rok := tc.RemoteAddr().(*net.TCPAddr)
	l, lok := tc.LocalAddr().(*net.TCPAddr)
	if rok && lok && (r.IP.IsLoopback() || r.IP.Equal(l.IP)) {
		tc.SetWriteBuffer(loopbackSendBuffer)
	}
}
