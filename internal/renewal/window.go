package renewal

import "time"

// Window is the span in which RenewAt places the renewal of a certificate
// valid from notBefore to notAfter, whatever the jitter: what mica tells an
// ACME client (RFC 9773 suggestedWindow), so that ACME clients renew when
// mica's own agent would.
func Window(notBefore, notAfter time.Time) (start, end time.Time) {
	return RenewAt(notBefore, notAfter, 0), RenewAt(notBefore, notAfter, 1)
}
