package discover

import "testing"

// FuzzParseLocation: whatever a report carries, ParseLocation either
// refuses it or returns a location whose text is exactly the input (one
// place, one text).
func FuzzParseLocation(f *testing.F) {
	for _, s := range []string{"tls://127.0.0.1:443", "tls://[::1]:8443?sni=a.example", "smtp://mail:25", "file://h/etc/a%20b.pem#alias",
		"file://h/", "tls://x:0", "postgres://db:5432?sni=", "file://h/a/../b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLocation(s)
		if err != nil {
			return
		}
		if l.String() != s {
			t.Fatalf("ParseLocation(%q) = %+v, which reads %q", s, l, l.String())
		}
		if again, err := ParseLocation(l.String()); err != nil || again != l {
			t.Fatalf("%q does not round-trip: %+v, %v", s, again, err)
		}
	})
}
