package mtls

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"net/http"

	"github.com/mica-pki/mica/identity"
)

// Peer is what a handler learns about the verified peer.
type Peer struct {
	Identity    identity.Identity
	Certificate *x509.Certificate
	// Chain is the verified path, leaf first and trust anchor last; set
	// by Verify and VerifyRequest, nil from PeerFromConnectionState.
	Chain []*x509.Certificate
	// Serial is the certificate's serial number in lower-case hex, as
	// big.Int.Text(16) writes it (the form the revocation feed uses).
	Serial string
	// Fingerprint is the SHA-256 of the certificate's DER, lower-case hex.
	Fingerprint string
}

// PeerFromConnectionState returns the peer of a completed handshake. It
// trusts that the connection was verified by a config from [ServerConfig]
// or [ClientConfig] (or another that verifies peers): with a tls.Config that
// accepts any certificate, what it returns is only what the peer claimed.
// ok is false when the handshake is not complete or the peer sent no
// certificate naming an identity.
func PeerFromConnectionState(cs *tls.ConnectionState) (Peer, bool) {
	if cs == nil || !cs.HandshakeComplete || len(cs.PeerCertificates) == 0 {
		return Peer{}, false
	}
	leaf := cs.PeerCertificates[0]
	id, err := identity.FromCertificate(leaf)
	if err != nil {
		return Peer{}, false
	}
	return Peer{Identity: id, Certificate: leaf, Serial: leaf.SerialNumber.Text(16), Fingerprint: fingerprint(leaf)}, true
}

// PeerIdentity returns the peer of the request's connection (r.TLS); see
// [PeerFromConnectionState].
func PeerIdentity(r *http.Request) (Peer, bool) {
	return PeerFromConnectionState(r.TLS)
}

func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}
