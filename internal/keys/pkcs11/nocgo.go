//go:build !cgo

package pkcs11

import (
	"crypto"
	"io"

	"github.com/mica-pki/mica/internal/keys"
)

// Token is a PKCS#11 token; in a build without cgo none can be opened.
type Token struct{}

// Key is a key held in a token.
type Key struct{}

// Open always fails without cgo, with ErrNeedsCgo.
func Open(cfg Config) (*Token, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	return nil, ErrNeedsCgo
}

// Close does nothing.
func (t *Token) Close() error { return nil }

// Generate always fails without cgo.
func (t *Token) Generate(keys.Algorithm, string) (*Key, error) { return nil, ErrNeedsCgo }

// Find always fails without cgo.
func (t *Token) Find(URI) (*Key, error) { return nil, ErrNeedsCgo }

// URI is the key's name.
func (k *Key) URI() URI { return URI{} }

// Public is nil.
func (k *Key) Public() crypto.PublicKey { return nil }

// Sign always fails without cgo.
func (k *Key) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) { return nil, ErrNeedsCgo }

// Destroy always fails without cgo.
func (t *Token) Destroy(URI) error { return ErrNeedsCgo }
