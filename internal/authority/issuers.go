package authority

import (
	"crypto/x509"
	"time"
)

// Issuers is the CA as it stands: which issuing CA signs now, and what
// clients trust. Package rotation keeps it, and it changes while the
// authority runs (a new intermediate activates, a root rolls over), so the
// authority asks on every use and keeps nothing.
type Issuers interface {
	// Signing is the issuing CA for a leaf that should end at notAfter:
	// the active one, or the next one when the active one ends first and
	// the next is already trusted everywhere.
	Signing(notAfter time.Time) *SigningCA
	// Issuer is the signing CA with the given ID while it is in the bundle
	// and its key is online, whatever its state; nil otherwise.
	Issuer(id string) *SigningCA
	// Trust is the trust bundle now.
	Trust() *Trust
}

// SigningCA is one issuing CA as the authority uses it.
type SigningCA struct {
	Issuer Issuer
	Cert   *x509.Certificate
	// ID is how the inventory names it: its certificate's fingerprint.
	ID string
	// Chain is what a holder presents after its own certificate: Cert,
	// then the cross-certificates that lead to every root in the bundle.
	Chain []*x509.Certificate
}

// Trust is the trust bundle at one moment: the roots clients trust (the
// active root first), and every intermediate and cross-certificate they
// vouch for.
type Trust struct {
	Roots         []*x509.Certificate
	Intermediates []*x509.Certificate
	rootPool      *x509.CertPool
	interPool     *x509.CertPool
	chains        map[string][]*x509.Certificate
}

// NewTrust builds a Trust; chains maps an issuing CA's ID to its Chain, so
// that a certificate issued earlier is returned with its own issuer's.
func NewTrust(roots, intermediates []*x509.Certificate, chains map[string][]*x509.Certificate) *Trust {
	t := &Trust{Roots: roots, Intermediates: intermediates, rootPool: x509.NewCertPool(), interPool: x509.NewCertPool(), chains: chains}
	for _, r := range roots {
		t.rootPool.AddCert(r)
	}
	for _, c := range intermediates {
		t.interPool.AddCert(c)
	}
	return t
}

// Chain is the chain a certificate issued by issuer (an ID) is presented
// with; nil for an issuer no longer in the bundle.
func (t *Trust) Chain(issuer string) []*x509.Certificate { return t.chains[issuer] }
