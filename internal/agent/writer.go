package agent

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"

	"github.com/mica-pki/mica/internal/atomicfile"
)

// Files says where the agent writes a credential. Empty paths take their
// default name in Dir: key.pem, cert.pem, chain.pem, fullchain.pem,
// bundle.pem, the same files `mica cert issue` writes.
type Files struct {
	Dir       string
	Key       string
	Cert      string
	Chain     string
	Fullchain string
	Bundle    string
	// UID and GID own the written files (-1: unchanged), so a service
	// running as another user can read its key.
	UID, GID int
}

func (f Files) withDefaults() Files {
	def := func(p *string, name string) {
		if *p == "" {
			*p = filepath.Join(f.Dir, name)
		}
	}
	def(&f.Key, "key.pem")
	def(&f.Cert, "cert.pem")
	def(&f.Chain, "chain.pem")
	def(&f.Fullchain, "fullchain.pem")
	def(&f.Bundle, "bundle.pem")
	return f
}

// writeCredential writes the certificate files and then the key, each
// atomically. The key goes last so that a reader who sees the new key also
// sees the certificate that matches it; reload hooks run only after all of
// them are in place.
func (f Files) writeCredential(c *Credential) error {
	var leaf, chain []byte
	leaf = pemCerts(c.Chain[:1])
	chain = pemCerts(c.Chain[1:])
	for _, w := range []struct {
		path string
		data []byte
	}{
		{f.Cert, leaf},
		{f.Chain, chain},
		{f.Fullchain, append(append([]byte{}, leaf...), chain...)},
		{f.Bundle, pemCerts(c.Roots)},
	} {
		if err := f.write(w.path, w.data, 0o644); err != nil {
			return err
		}
	}
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		return fmt.Errorf("agent: encoding the %T key: %w", c.Key, err)
	}
	return f.write(f.Key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// writeBundle replaces bundle.pem alone, when the roots change between
// renewals.
func (f Files) writeBundle(roots []*x509.Certificate) error {
	return f.write(f.Bundle, pemCerts(roots), 0o644)
}

func (f Files) write(path string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("agent: creating the directory for %s: %w", path, err)
	}
	if err := atomicfile.WriteOwned(path, data, perm, f.UID, f.GID); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return nil
}

// loadCredential reads a credential the agent (or `mica cert issue`) wrote
// before, so that a restarted agent carries on without a new token.
func (f Files) loadCredential() (*Credential, error) {
	certPEM, err := os.ReadFile(f.Cert)
	if err != nil {
		return nil, err
	}
	leaf, err := parseCerts(certPEM)
	if err != nil {
		return nil, fmt.Errorf("agent: %s: %w", f.Cert, err)
	}
	var chain, roots []*x509.Certificate
	if b, err := os.ReadFile(f.Chain); err == nil {
		chain, _ = parseCerts(b)
	}
	if b, err := os.ReadFile(f.Bundle); err == nil {
		roots, _ = parseCerts(b)
	}
	keyPEM, err := os.ReadFile(f.Key)
	if err != nil {
		return nil, fmt.Errorf("agent: %s holds a certificate but its key cannot be read: %w", f.Dir, err)
	}
	blk, _ := pem.Decode(keyPEM)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("agent: %s is not a PKCS#8 PRIVATE KEY PEM file: remove the files to enroll again", f.Key)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("agent: %s: %w", f.Key, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("agent: %s holds a %T, not a signing key", f.Key, k)
	}
	return newCredential(append(leaf[:1], chain...), signer, roots)
}

func pemCerts(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no PEM certificate found")
	}
	return out, nil
}
