package feed

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// tcpQueue reads a TCP socket's send queue (SIOCOUTQ: bytes not yet
// acknowledged by the peer).
type tcpQueue struct{ raw syscall.RawConn }

func newConnQueue(c net.Conn) connQueue {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return tcpQueue{raw}
}

func (q tcpQueue) queued() int64 {
	var n int
	var err error
	if cerr := q.raw.Control(func(fd uintptr) { n, err = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); cerr != nil || err != nil {
		return 0
	}
	return int64(n)
}
