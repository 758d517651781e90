package workloadapi

import (
	"fmt"
	"syscall"
)

// peerCaller asks the kernel who is at the other end of a unix socket.
func peerCaller(fd uintptr) (Caller, error) {
	cred, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	if err != nil {
		return Caller{}, fmt.Errorf("workloadapi: reading the caller's credentials (SO_PEERCRED): %w", err)
	}
	return Caller{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}, nil
}
