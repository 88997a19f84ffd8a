package client

import (
	"context"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDialerSilence: a connection dialled with Silence carries it as
// TCP_USER_TIMEOUT (unacknowledged data breaks it) and has keepalives on
// (a quiet peer that stopped answering breaks it too); Dial's has neither
// bound of its own.
func TestDialerSilence(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	opts := func(c *Client) (userTimeout, keepalive, idle int) {
		rc, err := c.conn.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		rc.Control(func(fd uintptr) {
			userTimeout, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
			keepalive, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE)
			idle, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_KEEPIDLE)
		})
		return
	}
	c, err := Dialer{Silence: 8 * time.Second}.Dial(context.Background(), l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ut, ka, idle := opts(c); ut != 8000 || ka == 0 || idle != 2 {
		t.Fatalf("TCP_USER_TIMEOUT %d ms, SO_KEEPALIVE %d, TCP_KEEPIDLE %d s; want 8000, on, 2", ut, ka, idle)
	}
	d, err := Dial(context.Background(), l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if ut, _, _ := opts(d); ut != 0 {
		t.Fatalf("Dial's connection has TCP_USER_TIMEOUT %d ms", ut)
	}
}
