// Package policy decides what mica may issue: it checks an authenticated
// request against a profile (which SPIFFE IDs, DNS names and IPs, for how
// long, with which keys, from which networks) and an optional CEL rule, and
// returns a [Decision] or a [*DeniedError] with a stable [Reason].
//
// It is pure: no I/O, no clock, no randomness. The config comes in as a
// value, and everything that varies per request is in the [Request].
//
// Start reading at [New], which validates a [Config] and compiles its globs,
// CIDRs and rules once, and [Engine.Decide], which runs the checks in a fixed
// order. The config format is documented on [ProfileConfig]; match.go holds
// the SPIFFE ID and DNS pattern rules, rule.go what a CEL rule sees.
// [LoadTestCases] and [RunTests] let operators check a policy change
// against sample requests before deploying it.
package policy
