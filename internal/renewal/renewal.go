// Package renewal is the one renewal schedule of every certificate mica
// keeps fresh (the agent's, the server's own TLS certificate, the OCSP
// responder's, ACME ARI windows): pure functions of the certificate's
// validity and a random number in [0, 1) that the caller injects, so tests
// pin it.
package renewal

import "time"

// renewFraction is where in a certificate's life renewal starts: at two
// thirds, a third of the life is left for retries while the server is away.
const renewFraction = 2.0 / 3.0

// jitterFraction spreads renewals over ±5% of the lifetime around the
// renewal point, so a fleet enrolled in the same minute does not renew in
// the same second forever after.
const jitterFraction = 0.05

// warnFraction: when less than this share of the lifetime is left and the
// certificate has still not been renewed, the agent warns loudly.
const warnFraction = 1.0 / 6.0

// RenewAt returns when to renew a certificate valid from notBefore to
// notAfter: at two thirds of its life, moved by up to ±5% of the life
// according to r in [0, 1).
func RenewAt(notBefore, notAfter time.Time, r float64) time.Time {
	life := notAfter.Sub(notBefore)
	offset := renewFraction + jitterFraction*(2*r-1)
	return notBefore.Add(time.Duration(float64(life) * offset))
}

// ExpiringSoon reports whether less than a sixth of the certificate's life
// is left at now: past every jittered renewal point, so a certificate in
// this state means renewals have been failing.
func ExpiringSoon(now, notBefore, notAfter time.Time) bool {
	life := notAfter.Sub(notBefore)
	return notAfter.Sub(now) < time.Duration(float64(life)*warnFraction)
}

// Backoff returns the wait before retry number attempt (0 for the first
// retry): base doubling each time, capped at max, then "equal jitter" —
// half fixed, half random by r in [0, 1) — so that agents that lost the
// server together do not return together.
func Backoff(attempt int, base, max time.Duration, r float64) time.Duration {
	if base <= 0 || max <= 0 {
		return 0
	}
	d := base
	for i := 0; i < attempt && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	return d/2 + time.Duration(float64(d/2)*r)
}

// RetryCap bounds the backoff for a certificate of the given lifetime: never
// more than a twelfth of its life (so a short-lived certificate still gets
// several tries in its last third) nor more than limit.
func RetryCap(life, limit time.Duration) time.Duration {
	return max(min(limit, life/12), 50*time.Millisecond)
}
