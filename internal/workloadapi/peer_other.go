//go:build !linux

package workloadapi

import "errors"

// peerCaller is Linux-only (SO_PEERCRED); elsewhere the agent serves only
// identities that are not restricted to uids or gids.
func peerCaller(uintptr) (Caller, error) {
	return Caller{}, errors.New("workloadapi: caller credentials are read only on Linux; drop uids/gids from the agent config")
}
