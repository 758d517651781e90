package credential

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// ErrMismatch is returned when a private key is not the key of the
// certificate it is read or written with.
var ErrMismatch = errors.New("credential: the private key does not match the certificate")

// Credential is a private key with its certificate chain and the roots to
// verify peers with.
type Credential struct {
	Chain []*x509.Certificate // the leaf first, then intermediates
	Key   crypto.Signer
	Roots []*x509.Certificate // may be empty when only a key pair is at hand
}

// New checks that key belongs to the leaf (chain[0]) and returns the
// credential; a mismatch is an error wrapping ErrMismatch.
func New(chain []*x509.Certificate, key crypto.Signer, roots []*x509.Certificate) (*Credential, error) {
	if len(chain) == 0 {
		return nil, errors.New("credential: no certificate")
	}
	if key == nil {
		return nil, errors.New("credential: no private key")
	}
	pub, ok := chain[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("%w (serial %s)", ErrMismatch, chain[0].SerialNumber.Text(16))
	}
	return &Credential{Chain: chain, Key: key, Roots: roots}, nil
}

// Leaf is the end-entity certificate.
func (c *Credential) Leaf() *x509.Certificate { return c.Chain[0] }

// TLSCertificate is the credential as crypto/tls wants it, Leaf set.
func (c *Credential) TLSCertificate() *tls.Certificate {
	tc := &tls.Certificate{PrivateKey: c.Key, Leaf: c.Chain[0]}
	for _, cert := range c.Chain {
		tc.Certificate = append(tc.Certificate, cert.Raw)
	}
	return tc
}
