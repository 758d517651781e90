package main

import (
	"math/big"
	"testing"
)

// --revoke takes a serial in any spelling openssl or mica prints, with an
// optional reason after the last colon.
func TestRevokedListSpellings(t *testing.T) {
	for _, tc := range []struct {
		in     string
		serial int64
		reason int
	}{
		{"1f2e", 0x1f2e, 0},
		{"0x1F2E", 0x1f2e, 0},
		{"1F:2E", 0x1f2e, 0},
		{"00:1F:2E:cACompromise", 0x1f2e, 2},
		{"1f2e:keyCompromise", 0x1f2e, 1},
	} {
		var l revokedList
		if err := l.Set(tc.in); err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if got := new(big.Int).SetBytes(l[0].Serial); got.Int64() != tc.serial || l[0].Reason != tc.reason {
			t.Errorf("%q: serial %x reason %d, want %x reason %d", tc.in, got, l[0].Reason, tc.serial, tc.reason)
		}
	}
	for _, bad := range []string{"", "0", "xyz", "1f2e:nosuchreason", "1f2e:", ":keyCompromise"} {
		var l revokedList
		if err := l.Set(bad); err == nil {
			t.Errorf("%q was accepted: %+v", bad, l)
		}
	}
}
