// Package limits enforces rate limits and detects anomalies for the
// authority: token buckets per identity, per requester and per source
// network; renewal storms (an identity renewing far more often than its
// certificate lifetime explains); issuance bursts per profile and per
// requester; requests from outside a profile's expected networks; and
// client certificates from issuers that are not mica's.
//
// Each finding is a metric (mica_rate_limited_total,
// mica_anomalies_total), an audit event throttled per key (auditlog.Throttle, shared with the
// failed-authentication events),
// and, where the config says refuse, a refusal: an *authority.Error that
// every door translates (HTTP 429 with Retry-After, ACME rateLimited).
//
// Start at Compile (the config sections) and New; the authority calls the
// Guard through its authority.Guard interface. State is per server process
// and bounded (packages ratelimit and lru).
package limits
