//go:build !cgo

package pkcs11

import (
	"errors"
	"testing"
)

// TestOpenWithoutCgo: a CGO_ENABLED=0 build refuses PKCS#11 with an error
// that says how to get it.
func TestOpenWithoutCgo(t *testing.T) {
	_, err := Open(Config{Module: "/usr/lib/softhsm/libsofthsm2.so", Token: "mica", PIN: "1234"})
	if !errors.Is(err, ErrNeedsCgo) {
		t.Fatalf("Open = %v, want ErrNeedsCgo", err)
	}
}
