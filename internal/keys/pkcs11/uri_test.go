package pkcs11

import (
	"bytes"
	"strings"
	"testing"
)

func TestURIRoundTrip(t *testing.T) {
	for _, u := range []URI{
		{Token: "mica", Object: "mica-intermediate-2", ID: []byte{0x01, 0xff, 0x20, 0x00}},
		{Token: "my token/1", Object: "a;b=c%", ID: []byte("plain")},
		{Token: "t", ID: []byte{7}},
		{Token: "t", Object: "only-label"},
	} {
		s := u.String()
		got, err := ParseURI(s)
		if err != nil {
			t.Fatalf("ParseURI(%q): %v", s, err)
		}
		if got.Token != u.Token || got.Object != u.Object || !bytes.Equal(got.ID, u.ID) {
			t.Errorf("ParseURI(%q) = %+v, want %+v", s, got, u)
		}
	}
}

func TestParseURIRefuses(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"file:ca.key", "not a pkcs11: URI"},
		{"pkcs11:token=t;id=%01?pin-value=1234", "PIN"},
		{"pkcs11:token=t;slot-id=3;id=%01", "not one mica reads"},
		{"pkcs11:token=t;id=%01;id=%02", "twice"},
		{"pkcs11:object=x;id=%01", "needs the token"},
		{"pkcs11:token=t", "needs the token and the key's id or object"},
		{"pkcs11:token=t;id=%zz", "id"},
	} {
		_, err := ParseURI(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseURI(%q) = %v, want an error saying %q", tc.in, err, tc.want)
		}
	}
}

func TestConfigNeedsEverything(t *testing.T) {
	for _, c := range []Config{{Token: "t", PIN: "p"}, {Module: "m", PIN: "p"}, {Module: "m", Token: "t"}} {
		if _, err := Open(c); err == nil {
			t.Errorf("Open(%+v) succeeded", c)
		}
	}
}
