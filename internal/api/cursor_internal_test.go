package api

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

func TestCursorRoundTrip(t *testing.T) {
	key := listKey{profile: "web", status: "active", expiringWithin: 7 * 24 * time.Hour}
	for _, pos := range []store.Position{
		{NotAfter: time.Date(2026, 12, 6, 18, 0, 0, 123456000, time.UTC), Serial: "1a2b"},
		{NotAfter: time.Unix(0, 0).UTC(), Serial: "0"},
		{NotAfter: time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC), Serial: "7fffffffffffffffffffffffffffffffffffffff"},
		{NotAfter: time.Date(1950, 1, 1, 0, 0, 0, 0, time.UTC), Serial: "ff"},
	} {
		c := encodeCursor(key, pos)
		got, err := decodeCursor(c, key)
		if err != nil || !got.NotAfter.Equal(pos.NotAfter) || got.Serial != pos.Serial {
			t.Errorf("%+v → %s → %+v, %v", pos, c, got, err)
		}
		if len(c) > maxCursorLen {
			t.Errorf("%s is longer than a cursor may be", c)
		}
		// The same filter written another way is the same filter.
		if _, err := decodeCursor(c, listKey{profile: "web", status: "active", expiringWithin: 168 * time.Hour}); err != nil {
			t.Errorf("7d and 168h: %v", err)
		}
	}
}

// Every field of a cursor is checked even when its check is recomputed:
// a cursor is read strictly, not as far as it makes sense.
func TestCursorStructure(t *testing.T) {
	key := listKey{identity: "spiffe://example.org/a"}
	good, _ := base64.RawURLEncoding.DecodeString(encodeCursor(key, store.Position{NotAfter: time.Now(), Serial: "abc"}))
	// reseal recomputes the check of a body.
	reseal := func(body []byte) string {
		sum := sha256.Sum256(body)
		return base64.RawURLEncoding.EncodeToString(append(append([]byte(nil), body...), sum[:cursorCheckLen]...))
	}
	body := good[:len(good)-cursorCheckLen]
	with := func(i int, v byte) []byte {
		b := append([]byte(nil), body...)
		b[i] = v
		return b
	}
	for name, c := range map[string]string{
		"version 2":          reseal(with(0, 2)),
		"serial length 0":    reseal(with(9, 0)),
		"serial longer":      reseal(with(9, 4)),
		"serial shorter":     reseal(with(9, 2)),
		"upper-case serial":  reseal(with(10, 'A')),
		"serial not hex":     reseal(with(11, 'g')),
		"serial with a NUL":  reseal(with(12, 0)),
		"no filter tag":      reseal(body[:len(body)-cursorTagLen]),
		"serial of 41 chars": reseal(append(append([]byte{1, 0, 0, 0, 0, 0, 0, 0, 1, 41}, []byte("12345678901234567890123456789012345678901")...), key.tag()...)),
	} {
		if _, err := decodeCursor(c, key); !errors.Is(err, errCursorDamaged) {
			t.Errorf("%s: %v, want it refused as damaged", name, err)
		}
	}
	if _, err := decodeCursor(reseal(body), listKey{identity: "spiffe://example.org/b"}); !errors.Is(err, errCursorFilter) {
		t.Errorf("another identity: %v, want errCursorFilter", err)
	}
}

// Two filters never share a tag by moving text between fields.
func TestCursorTagSeparatesFields(t *testing.T) {
	a := listKey{identity: "ab", profile: "c"}
	b := listKey{identity: "a", profile: "bc"}
	if string(a.tag()) == string(b.tag()) {
		t.Error("identity ab + profile c has the tag of identity a + profile bc")
	}
}

// Whatever a client sends as a cursor is refused with one of the two
// errors or read as a place whose cursor is exactly what was sent.
func FuzzDecodeCursor(f *testing.F) {
	key := listKey{profile: "web"}
	f.Add(encodeCursor(key, store.Position{NotAfter: time.Now(), Serial: "1"}))
	f.Add("")
	f.Add("AQ")
	f.Add(encodeCursor(listKey{}, store.Position{NotAfter: time.Now(), Serial: "ffff"}))
	f.Fuzz(func(t *testing.T, s string) {
		pos, err := decodeCursor(s, key)
		if err != nil {
			if !errors.Is(err, errCursorDamaged) && !errors.Is(err, errCursorFilter) {
				t.Fatalf("%q: %v", s, err)
			}
			return
		}
		if again := encodeCursor(key, pos); again != s {
			t.Fatalf("%q read as %+v, which encodes as %q", s, pos, again)
		}
	})
}
