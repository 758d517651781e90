package policy

import (
	"strings"
	"testing"
)

func TestSPIFFEGlobMatch(t *testing.T) {
	tests := []struct {
		pattern, path string
		want          bool
	}{
		{"/billing/*", "/billing/api", true},
		{"/billing/*", "/billing", false},
		{"/billing/*", "/billing/", false}, // trailing slash: not a SPIFFE path
		{"/billing/*", "/billing/api/v2", false},
		{"/billing/*", "/billing//api", false},
		{"/billing/*", "/Billing/api", false}, // paths are case-sensitive
		{"/billing/*", "/billingx/api", false},
		{"/billing/*", "billing/api", false},
		{"/billing/*", "", false},
		{"/billing/api", "/billing/api", true},
		{"/billing/api", "/billing/API", false},
		{"/billing/api", "/billing/ap", false},
		{"/billing/api", "/billing/api/x", false},
		{"/ns/*/sa/*", "/ns/prod/sa/web", true},
		{"/ns/*/sa/*", "/ns/prod/sa", false},
		{"/ns/*/sa/*", "/ns/prod/xx/web", false},
		{"/ns/*/sa/*", "/ns/a/b/sa/web", false},
		{"/billing/**", "/billing/api", true},
		{"/billing/**", "/billing/api/v2/x", true},
		{"/billing/**", "/billing", false}, // ** is one or more segments
		{"/billing/**", "/billing/", false},
		{"/billing/**", "/billing/api/", false},
		{"/billing/**", "/billing/a//b", false},
		{"/billing/**", "/billing-admin/x", false},
		{"/**", "/x", true},
		{"/**", "/x/y", true},
		{"/**", "/", false},
		{"/**", "", false},
		{"/*/**", "/a", false},
		{"/*/**", "/a/b", true},
		{"/a%2Fb", "/a/b", false}, // no percent-decoding (and % is invalid anyway, see parse tests)
	}
	for _, tt := range tests {
		t.Run(tt.pattern+" "+tt.path, func(t *testing.T) {
			g, err := parseSPIFFEGlob(tt.pattern)
			if err != nil {
				if tt.want {
					t.Fatalf("parse: %v", err)
				}
				return
			}
			if got := g.match(tt.path); got != tt.want {
				t.Errorf("match = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseSPIFFEGlobErrors(t *testing.T) {
	tests := []struct{ pattern, want string }{
		{"", "at least one path segment"},
		{"/", "at least one path segment"},
		{"billing/*", "start the path with /"},
		{"spiffe://example.org/billing/*", "write only the path"},
		{"/billing/", "remove the trailing /"},
		{"/billing//x", "not a valid SPIFFE ID path segment"},
		{"/**/x", "** may only be the last segment"},
		{"/billing-*", "* must be a whole segment"},
		{"/bil*ing", "* must be a whole segment"},
		{"/***", "* must be a whole segment"},
		{"/a%2Fb", "not a valid SPIFFE ID path segment"},
		{"/a/./b", "not a valid SPIFFE ID path segment"},
		{"/a/../b", "not a valid SPIFFE ID path segment"},
		{"/a b", "not a valid SPIFFE ID path segment"},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			_, err := parseSPIFFEGlob(tt.pattern)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestDNSPatternMatch(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"api.example.org", "api.example.org", true},
		{"API.Example.org.", "api.example.org", true}, // patterns are normalized
		{"api.example.org", "api.example.org.evil.com", false},
		{"api.example.org", "xapi.example.org", false},
		{"api.example.org", "example.org", false},
		{"*.svc.example.internal", "db.svc.example.internal", true},
		{"*.svc.example.internal", "a.b.svc.example.internal", false}, // * is one label
		{"*.svc.example.internal", "svc.example.internal", false},
		{"*.svc.example.internal", ".svc.example.internal", false},
		{"*.svc.example.internal", "*.svc.example.internal", true}, // only reached when wildcards are allowed
		{"api.svc.example.internal", "*.svc.example.internal", false},
		{"api.*.example.org", "api.eu.example.org", true},
		{"api.*.example.org", "api.example.org", false},
		{"*.*.example.org", "a.b.example.org", true},
		{"*.example.org", "a..example.org", false},
	}
	for _, tt := range tests {
		t.Run(tt.pattern+" "+tt.name, func(t *testing.T) {
			d, err := parseDNSPattern(tt.pattern)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if got := d.match(tt.name); got != tt.want {
				t.Errorf("match = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseDNSPatternErrors(t *testing.T) {
	tests := []struct{ pattern, want string }{
		{"", "1 to 253 characters"},
		{"*", "no fixed label"},
		{"*.*", "no fixed label"},
		{"**.example.org", "* must be a whole label"},
		{"api-*.example.org", "* must be a whole label"},
		{"a..example.org", "must be 1-63"},
		{"-a.example.org", "must be 1-63"},
		{"a_b.example.org", "must be 1-63"},
		{strings.Repeat("a", 64) + ".org", "must be 1-63"},
		{strings.Repeat("a.", 127) + "org", "1 to 253 characters"},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			_, err := parseDNSPattern(tt.pattern)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestParsePrefix(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{in: "10.0.0.0/8", want: "10.0.0.0/8"},
		{in: "fd00::/8", want: "fd00::/8"},
		{in: "10.1.2.3", want: "10.1.2.3/32"},
		{in: "::ffff:10.1.2.3", want: "10.1.2.3/32"},
		{in: "fd00::1", want: "fd00::1/128"},
		{in: "10.0.0.1/8", err: "did you mean 10.0.0.0/8?"},
		{in: "::ffff:10.0.0.0/104", err: "write the IPv4 form"},
		{in: "10.0.0.0/33", err: "is not a CIDR"},
		{in: "ten", err: "is not an IP address or CIDR"},
		{in: "fe80::1%eth0", err: "is not an IP address or CIDR"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, err := parsePrefix(tt.in)
			switch {
			case tt.err != "":
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("error = %v, want it to contain %q", err, tt.err)
				}
			case err != nil:
				t.Fatal(err)
			case p.String() != tt.want:
				t.Errorf("= %s, want %s", p, tt.want)
			}
		})
	}
}

// FuzzMatchSPIFFE checks that parsing and matching never panic, and that a
// match never lets through a malformed path (empty segments, trailing slash)
// or one whose fixed segments differ from the pattern's.
func FuzzMatchSPIFFE(f *testing.F) {
	for _, s := range [][2]string{
		{"/billing/*", "/billing/api"}, {"/billing/**", "/billing/a/b"}, {"/**", "/"},
		{"/ns/*/sa/*", "/ns/x/sa/y"}, {"/a", "/a/"}, {"/*/**", "//"}, {"/a/**", "/a/b//c"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, path string) {
		g, err := parseSPIFFEGlob(pattern)
		if err != nil {
			return
		}
		if !g.match(path) {
			return
		}
		// Characters are spiffeid's to check (Decide only sees parsed IDs);
		// the structure is the glob's.
		if path == "" || path == "/" || path[0] != '/' || strings.HasSuffix(path, "/") || strings.Contains(path, "//") {
			t.Fatalf("%q matched %q, which is not a well-formed SPIFFE ID path", pattern, path)
		}
		pat := strings.Split(pattern[1:], "/")
		got := strings.Split(path[1:], "/")
		if g.deep {
			if len(got) < len(pat) {
				t.Fatalf("%q matched %q, which is shorter than the pattern", pattern, path)
			}
			pat = pat[:len(pat)-1]
		} else if len(got) != len(pat) {
			t.Fatalf("%q matched %q, which has a different number of segments", pattern, path)
		}
		for i, s := range pat {
			if s != "*" && s != got[i] {
				t.Fatalf("%q matched %q, but segment %d differs", pattern, path, i)
			}
		}
	})
}

// FuzzMatchDNS is the same for DNS patterns.
func FuzzMatchDNS(f *testing.F) {
	for _, s := range [][2]string{
		{"*.svc.example.internal", "a.svc.example.internal"}, {"api.example.org", "api.example.org"},
		{"*.example.org", "*.example.org"}, {"a.*.org", "a..org"}, {"*", ""},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		d, err := parseDNSPattern(pattern)
		if err != nil {
			return
		}
		if !d.match(name) {
			return
		}
		got := strings.Split(name, ".")
		if len(got) != len(d.labels) {
			t.Fatalf("%q matched %q, which has a different number of labels", pattern, name)
		}
		for i, l := range d.labels {
			if got[i] == "" || (l != "*" && l != got[i]) {
				t.Fatalf("%q matched %q, but label %d differs", pattern, name, i)
			}
		}
	})
}
