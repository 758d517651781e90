package workloadapi

import "slices"

// Entitlement says which local processes may have an identity: those whose
// uid or gid it lists, as the kernel reports them for the socket. An
// identity that lists neither goes to every local process. This is the one
// place that rule is written; the agent's config (uids, gids per identity)
// only fills it in.
type Entitlement struct {
	UIDs []uint32
	GIDs []uint32
}

// Allows reports whether caller may have the identity; known is false when
// the kernel could not say who called, which satisfies only an unrestricted
// identity.
func (e Entitlement) Allows(caller Caller, known bool) bool {
	if len(e.UIDs) == 0 && len(e.GIDs) == 0 {
		return true
	}
	return known && (slices.Contains(e.UIDs, caller.UID) || slices.Contains(e.GIDs, caller.GID))
}
