package workloadapi

import (
	"context"
	"errors"
	"fmt"
	"net"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Caller is the local process at the other end of the socket, as the kernel
// reports it (SO_PEERCRED): it cannot be forged by the caller.
type Caller struct {
	PID      int32
	UID, GID uint32
}

// callerInfo carries the Caller through gRPC's peer information.
type callerInfo struct {
	credentials.CommonAuthInfo
	Caller Caller
}

func (callerInfo) AuthType() string { return "unix-peercred" }

// unknownCaller is the AuthInfo when the kernel could not say who called.
type unknownCaller struct{ credentials.CommonAuthInfo }

func (unknownCaller) AuthType() string { return "unix" }

// peerCreds is a gRPC TransportCredentials for unix sockets that does no
// handshake and only records who connected.
type peerCreds struct{}

func (peerCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("workloadapi: peer credentials are server-side only")
}

func (peerCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return nil, nil, fmt.Errorf("workloadapi: %T is not a unix socket connection", conn)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, nil, fmt.Errorf("workloadapi: %w", err)
	}
	var c Caller
	var cerr error
	if err := raw.Control(func(fd uintptr) { c, cerr = peerCaller(fd) }); err != nil {
		return nil, nil, fmt.Errorf("workloadapi: %w", err)
	}
	if cerr != nil {
		// Serve anyway: callerOf then reports an unknown caller, who gets
		// only the identities not restricted to uids or gids.
		return conn, unknownCaller{}, nil
	}
	return conn, callerInfo{
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity},
		Caller:         c,
	}, nil
}

func (peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "unix-peercred"}
}
func (p peerCreds) Clone() credentials.TransportCredentials { return p }
func (peerCreds) OverrideServerName(string) error           { return nil }

// callerOf returns the caller of a request; ok is false when the transport
// did not say (then no identity restricted to callers is handed out).
func callerOf(ctx context.Context) (Caller, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Caller{}, false
	}
	ci, ok := p.AuthInfo.(callerInfo)
	return ci.Caller, ok
}
