package feed

import (
	"context"
	"crypto/tls"
	"net"
)

// connQueue says how many bytes written to a connection its peer has not
// taken yet (sent and unacknowledged, or not sent).
type connQueue interface{ queued() int64 }

type connKey struct{}

// ConnContext is for http.Server.ConnContext on the listener that serves
// the feed: it lets each stream see its connection's send queue, so the
// lag metric counts changes a subscriber has not read even while they sit
// in socket buffers.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if q := newConnQueue(c); q != nil {
		return context.WithValue(ctx, connKey{}, q)
	}
	return ctx
}

func connQueueOf(ctx context.Context) connQueue {
	q, _ := ctx.Value(connKey{}).(connQueue)
	return q
}
