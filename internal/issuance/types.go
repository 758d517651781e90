package issuance

import (
	"crypto"
	"crypto/x509"
	"time"

	"github.com/mica-pki/mica/identity"
)

// Request is a fully decided end-entity certificate: policy has already
// approved every field. Issue only validates, lints and signs.
type Request struct {
	PublicKey   crypto.PublicKey
	Identity    identity.Identity
	NotBefore   time.Time
	NotAfter    time.Time
	ExtKeyUsage []x509.ExtKeyUsage
}
