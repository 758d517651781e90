// Package keys names the key algorithms mica issues and signs with, and
// generates keys for them. Every key it hands out is a [crypto.Signer], so a
// key held in a file, an HSM or a KMS is used the same way.
//
// Start with [Algorithm] and [Generate]; [AlgorithmOf] tells which algorithm
// a public key belongs to (and refuses the ones mica does not support).
// Custody of CA keys on disk lives in the keys/file package.
package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Algorithm is a key type and size mica supports, spelled the way
// configuration files and flags spell it.
type Algorithm string

// The supported algorithms. ECDSA P-256 is the default: small keys, fast
// signatures, and supported by every TLS stack mica's users are likely to run.
const (
	ECDSAP256 Algorithm = "ecdsa-p256"
	ECDSAP384 Algorithm = "ecdsa-p384"
	Ed25519   Algorithm = "ed25519"
	RSA3072   Algorithm = "rsa-3072"

	// Default is the algorithm used when none is configured.
	Default = ECDSAP256
)

// rsaBits is the only RSA size mica generates or accepts: 2048-bit RSA is
// on its way out (NIST SP 800-131A), and larger sizes cost a lot of signing
// time for little gain over ECDSA.
const rsaBits = 3072

// ErrUnsupported is returned for an algorithm name or a public key type that
// mica does not support.
var ErrUnsupported = errors.New("keys: unsupported key algorithm")

// Algorithms lists every supported algorithm, default first.
func Algorithms() []Algorithm {
	return []Algorithm{ECDSAP256, ECDSAP384, Ed25519, RSA3072}
}

// ParseAlgorithm reads an algorithm name; the empty string means [Default].
func ParseAlgorithm(s string) (Algorithm, error) {
	a := Algorithm(strings.ToLower(strings.TrimSpace(s)))
	if a == "" {
		return Default, nil
	}
	for _, known := range Algorithms() {
		if a == known {
			return a, nil
		}
	}
	return "", fmt.Errorf("%w %q: use one of %s", ErrUnsupported, s, algorithmList())
}

func algorithmList() string {
	names := make([]string, 0, 4)
	for _, a := range Algorithms() {
		names = append(names, string(a))
	}
	return strings.Join(names, ", ")
}

// String returns the algorithm's configuration name.
func (a Algorithm) String() string { return string(a) }

// Generate makes a new private key. rand is passed to the standard library;
// note that recent Go releases always use a secure source for key generation
// and may ignore it.
func Generate(alg Algorithm, rand io.Reader) (crypto.Signer, error) {
	switch alg {
	case ECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand)
	case ECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand)
	case Ed25519:
		_, priv, err := ed25519.GenerateKey(rand)
		if err != nil {
			return nil, fmt.Errorf("keys: generating ed25519 key: %w", err)
		}
		return priv, nil
	case RSA3072:
		return rsa.GenerateKey(rand, rsaBits)
	}
	return nil, fmt.Errorf("%w %q: use one of %s", ErrUnsupported, alg, algorithmList())
}

// AlgorithmOf tells which supported algorithm a public key belongs to. Keys
// of other types or sizes (P-521, RSA other than 3072 bits, …) are refused
// with an error wrapping [ErrUnsupported].
func AlgorithmOf(pub crypto.PublicKey) (Algorithm, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return ECDSAP256, nil
		case elliptic.P384():
			return ECDSAP384, nil
		}
		return "", fmt.Errorf("%w: ECDSA curve %s: use P-256 or P-384", ErrUnsupported, k.Curve.Params().Name)
	case ed25519.PublicKey:
		return Ed25519, nil
	case *rsa.PublicKey:
		if k.N.BitLen() == rsaBits {
			return RSA3072, nil
		}
		return "", fmt.Errorf("%w: %d-bit RSA: use 3072-bit RSA or an ECDSA key", ErrUnsupported, k.N.BitLen())
	case nil:
		return "", fmt.Errorf("%w: no public key", ErrUnsupported)
	}
	return "", fmt.Errorf("%w: public key type %T", ErrUnsupported, pub)
}

// SubjectKeyID is the key identifier for pub by method 1 of RFC 7093: the
// leftmost 160 bits of the SHA-256 hash of the subjectPublicKey bits. It is
// what crypto/x509 computes for CA certificates, so a root's authority key
// identifier and subject key identifier agree.
func SubjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("keys: encoding public key: %w", err)
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, fmt.Errorf("keys: decoding public key: %w", err)
	}
	h := sha256.Sum256(spki.PublicKey.Bytes)
	return h[:20], nil
}
