package rotation

import (
	"crypto/x509"
	"time"

	"github.com/mica-pki/mica/internal/authority"
)

// Static is a CA that never rotates: one issuing CA and its roots. Tests
// and throwaway servers use it; a served CA uses a Manager.
func Static(iss authority.Issuer, cert *x509.Certificate, roots ...*x509.Certificate) authority.Issuers {
	id := authority.Fingerprint(cert.Raw)
	chain := []*x509.Certificate{cert}
	return &static{
		signing: &authority.SigningCA{Issuer: iss, Cert: cert, ID: id, Chain: chain},
		trust:   authority.NewTrust(roots, chain, map[string][]*x509.Certificate{id: chain}),
	}
}

type static struct {
	signing *authority.SigningCA
	trust   *authority.Trust
}

func (s *static) Signing(time.Time) *authority.SigningCA { return s.signing }
func (s *static) Trust() *authority.Trust                { return s.trust }

func (s *static) Issuer(id string) *authority.SigningCA {
	if id == s.signing.ID {
		return s.signing
	}
	return nil
}
