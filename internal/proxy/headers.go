package proxy

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"net/http"
	"strings"

	"github.com/mica-pki/mica/identity"
)

// The headers an inbound listener sets for the backend. Only the proxy
// writes them: whatever the client sent under these names (in any case, with
// underscores for dashes) is removed first.
const (
	// HeaderPeerID is the peer's primary identity: its SPIFFE ID, else its
	// first DNS name, else its first IP address.
	HeaderPeerID = "X-Mica-Peer-Id"
	// HeaderPeerSANs is every name in the certificate, comma-separated,
	// SPIFFE ID first, then DNS names, then IP addresses.
	HeaderPeerSANs = "X-Mica-Peer-Sans"
	// HeaderPeerSerial is the certificate's serial number, lower-case hex
	// without leading zeros (as mica's inventory and revocation feed write
	// it).
	HeaderPeerSerial = "X-Mica-Peer-Serial"
	// HeaderPeerFingerprint is "sha256:" and the lower-case hex SHA-256 of
	// the certificate's DER.
	HeaderPeerFingerprint = "X-Mica-Peer-Fingerprint"
	// HeaderXFCC is Envoy's x-forwarded-client-cert, for backends that
	// already read it: By=<proxy's SPIFFE ID>;Hash=<hex SHA-256 of the
	// client certificate>;URI=<client SPIFFE ID>;DNS=<name>…
	HeaderXFCC = "X-Forwarded-Client-Cert"
)

// identityHeaderPrefix covers every header mica may ever set, so a header
// added in a later version is already stripped by this one.
const identityHeaderPrefix = "x-mica-"

// normalizeHeaderName is how backends may read a header name: case does not
// matter, and many frameworks (CGI, WSGI, Rack, PHP) turn dashes and
// underscores into the same character, so X_Mica_Peer_Id arrives as
// X-Mica-Peer-Id's variable.
func normalizeHeaderName(k string) string {
	return strings.ReplaceAll(strings.ToLower(k), "_", "-")
}

// isIdentityHeader reports whether a normalized name is one only the proxy
// may set.
func isIdentityHeader(norm string) bool {
	return strings.HasPrefix(norm, identityHeaderPrefix) || norm == "x-forwarded-client-cert"
}

// stripper removes the client's copies of the identity headers and of the
// configured names, in every spelling.
type stripper map[string]bool // normalized names besides the identity headers

func newStripper(names ...[]string) stripper {
	s := stripper{}
	for _, list := range names {
		for _, n := range list {
			s[normalizeHeaderName(n)] = true
		}
	}
	return s
}

func (s stripper) strip(h http.Header) {
	for k := range h {
		if n := normalizeHeaderName(k); isIdentityHeader(n) || s[n] {
			delete(h, k)
		}
	}
}

// setIdentity writes the verified peer's headers; by is the proxy's own
// SPIFFE ID for X-Forwarded-Client-Cert's By (empty: left out).
func setIdentity(h http.Header, id identity.Identity, cert *x509.Certificate, by string) {
	sum := sha256.Sum256(cert.Raw)
	hash := hex.EncodeToString(sum[:])
	h.Set(HeaderPeerID, id.Primary())
	h.Set(HeaderPeerSANs, strings.Join(id.SANs(), ","))
	h.Set(HeaderPeerSerial, cert.SerialNumber.Text(16))
	h.Set(HeaderPeerFingerprint, "sha256:"+hash)
	h.Set(HeaderXFCC, xfcc(id, hash, by))
}

// xfcc is one element of Envoy's x-forwarded-client-cert. SPIFFE IDs and
// DNS names cannot hold the characters that would need quoting (",;=\"").
func xfcc(id identity.Identity, hash, by string) string {
	var b strings.Builder
	if by != "" {
		b.WriteString("By=" + by + ";")
	}
	b.WriteString("Hash=" + hash)
	if !id.SPIFFE.IsZero() {
		b.WriteString(";URI=" + id.SPIFFE.String())
	}
	for _, d := range id.DNS {
		b.WriteString(";DNS=" + d)
	}
	return b.String()
}
