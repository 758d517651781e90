package telemetry

import (
	"maps"
	"slices"
)

// Label values that stand for many.
const (
	// ProfileOther counts a profile name the config does not have (an old
	// certificate's, or one a request named): any number of them is one
	// series.
	ProfileOther = "other"
	// ProfileNone counts requests refused before any profile was known
	// from an authenticated source (a bad token, say).
	ProfileNone = "none"
	// slugOther replaces a reason or door that is not a plain slug.
	slugOther = "other"
)

// profileSet bounds the profile label to the configured profiles.
type profileSet map[string]bool

func newProfileSet(names []string) profileSet {
	s := make(profileSet, len(names))
	for _, n := range names {
		s[n] = true
	}
	return s
}

// labels are every value the profile label can take: the configured
// profiles, "other" and "none".
func (s profileSet) labels() []string {
	out := slices.Sorted(maps.Keys(s))
	return append(out, ProfileOther, ProfileNone)
}

func (s profileSet) label(name string) string {
	switch {
	case name == "":
		return ProfileNone
	case s[name]:
		return name
	}
	return ProfileOther
}

// slug keeps a reason or door label that is a short lower-case slug, as
// every one mica's code defines is, and makes anything else "other": a
// guard, so that a future reason built from request data could not grow
// the series.
func slug(s string) string {
	if s == "" || len(s) > 40 {
		return slugOther
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' {
			return slugOther
		}
	}
	return s
}

// revocationReasons are RFC 5280's CRLReason names, indexed by code.
var revocationReasons = []string{
	0: "unspecified", 1: "keyCompromise", 2: "cACompromise", 3: "affiliationChanged", 4: "superseded",
	5: "cessationOfOperation", 6: "certificateHold", 8: "removeFromCRL", 9: "privilegeWithdrawn", 10: "aACompromise",
}

func revocationReason(code int) string {
	if code < 0 || code >= len(revocationReasons) || revocationReasons[code] == "" {
		return slugOther
	}
	return revocationReasons[code]
}
