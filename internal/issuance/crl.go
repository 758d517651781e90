package issuance

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
)

// CRLSigner is the one way a CA's key signs a CRL: package crl encodes
// the list, this signs it. The CRL is linted before it is published
// (LintCRL, in the CRL service); the signature is checked against the
// CA's public key before it is returned, so a faulty signer (an HSM
// returning garbage) cannot publish a broken CRL.
type CRLSigner struct {
	cert *x509.Certificate
	key  crypto.Signer
	alg  x509.SignatureAlgorithm
	hash crypto.Hash
}

// NewCRLSigner returns the CRL signer of the CA cert whose key is key.
func NewCRLSigner(cert *x509.Certificate, key crypto.Signer) *CRLSigner {
	s := &CRLSigner{cert: cert, key: key}
	switch k := key.Public().(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P384() {
			s.alg, s.hash = x509.ECDSAWithSHA384, crypto.SHA384
		} else {
			s.alg, s.hash = x509.ECDSAWithSHA256, crypto.SHA256
		}
	case *rsa.PublicKey:
		s.alg, s.hash = x509.SHA256WithRSA, crypto.SHA256
	case ed25519.PublicKey:
		s.alg = x509.PureEd25519
	}
	return s
}

// Cert is the CA certificate whose CRLs this signs.
func (s *CRLSigner) Cert() *x509.Certificate { return s.cert }

// Public is the CA's public key: the CRL encoder names its algorithm.
func (s *CRLSigner) Public() crypto.PublicKey { return s.key.Public() }

// SignCRL signs a DER TBSCertList whose signature algorithm is the one
// package crl writes for this key (ECDSA with SHA-256 or SHA-384 by curve,
// RSA PKCS #1 v1.5 with SHA-256, or Ed25519).
func (s *CRLSigner) SignCRL(tbs []byte) ([]byte, error) {
	if s.alg == x509.UnknownSignatureAlgorithm {
		return nil, fmt.Errorf("issuance: CA %q has a key of type %T, which cannot sign CRLs", s.cert.Subject.CommonName, s.key.Public())
	}
	sig, err := crypto.SignMessage(s.key, rand.Reader, tbs, s.hash)
	if err != nil {
		return nil, fmt.Errorf("issuance: signing the CRL of %q: %w", s.cert.Subject.CommonName, err)
	}
	check := &x509.Certificate{PublicKey: s.key.Public()}
	if err := check.CheckSignature(s.alg, tbs, sig); err != nil {
		return nil, errors.New("issuance: the CA's signer returned an invalid CRL signature")
	}
	return sig, nil
}
