package namematch

import (
	"testing"

	"github.com/mica-pki/mica/identity"
)

// FuzzParse: a pattern that parses matches only names of its own kind.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"*.example.org", "10.0.0.0/8", "spiffe://example.org/a/", "a.example", "::1", "*.", "/"} {
		f.Add(s, "a.example.org")
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		p, err := Parse(pattern)
		if err != nil {
			return
		}
		n, err := identity.ParseName(name)
		if err != nil {
			return
		}
		if p.Match(n) && n.Kind() != p.kind {
			t.Fatalf("%q (kind %v) matched %q of kind %v", pattern, p.kind, name, n.Kind())
		}
	})
}
