package pkcs11

import "errors"

// Config says which token holds the keys.
type Config struct {
	// Module is the path of the PKCS#11 library, e.g.
	// /usr/lib/softhsm/libsofthsm2.so.
	Module string
	// Token is the label of the token (slot) to use.
	Token string
	// PIN logs in as the token's user. It is never logged or stored by
	// this package.
	PIN string
	// Sessions bounds how many signatures run at once; default 8.
	Sessions int
}

// ErrNeedsCgo is returned by Open in a binary built without cgo.
var ErrNeedsCgo = errors.New("keys/pkcs11: this mica was built without cgo (CGO_ENABLED=0), and loading a PKCS#11 module needs cgo: build mica with CGO_ENABLED=1 and a C compiler, or keep the CA keys in encrypted files (key_backend: file)")

func (c Config) check() error {
	switch {
	case c.Module == "":
		return errors.New("keys/pkcs11: no module: give the path of the PKCS#11 library (pkcs11.module, --pkcs11-module)")
	case c.Token == "":
		return errors.New("keys/pkcs11: no token: give the label of the token that holds the CA keys (pkcs11.token, --pkcs11-token)")
	case c.PIN == "":
		return errors.New("keys/pkcs11: no PIN: set MICA_PKCS11_PIN or pkcs11.pin_file")
	}
	return nil
}
