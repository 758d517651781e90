package ca

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/mica-pki/mica/internal/keys/custody"
)

// Files of a root rollover at the offline-root ceremony, and of the next
// intermediate a server requests while its root is offline.
const (
	// PreviousRootCertFile and PreviousRootKeyFile keep the root a
	// rollover replaced, on the root machine, for its CRLs until it
	// leaves the bundle.
	PreviousRootCertFile = "previous-root.pem"
	PreviousRootKeyFile  = "previous-root.key"
	// CrossFromPreviousFile is the new root certified by the previous
	// root's key; CrossToPreviousFile the previous root certified by the
	// new root's key.
	CrossFromPreviousFile = "root-cross-from-previous.pem"
	CrossToPreviousFile   = "root-cross-to-previous.pem"
	// NextIntermediateKeyFile and NextIntermediateCSRFile are a server's
	// request for its next intermediate, between `request-intermediate
	// --next` and `import-intermediate --next`.
	NextIntermediateKeyFile = "next-intermediate.key"
	NextIntermediateCSRFile = "next-intermediate.csr"
)

// Rollover is a new root and its cross-certificates with the one it
// replaces.
type Rollover struct {
	Root, Previous *x509.Certificate
	// CrossFromPrevious is Root certified by Previous's key: verifiers
	// that trust only Previous accept chains ending in Root. CrossToPrevious
	// is the other way round.
	CrossFromPrevious, CrossToPrevious *x509.Certificate
}

// RollRoot makes the next root on the root machine: a new key (in cfg.Keys'
// custody) and self-signed root, cross-signed both ways with the current
// root. The current root and its key become previous-root.*, the new ones
// root.*, so that sign-intermediate signs with the new root from then on;
// the cross-certificates are written next to them. Carry root.pem and both
// cross-certificates to the server (`mica ca import-root`). A rollover
// refuses to start while the previous one's files are still there.
func RollRoot(dir string, cfg InitConfig, validity time.Duration) (*Rollover, error) {
	alg, err := cfg.check()
	if err != nil {
		return nil, err
	}
	for _, n := range []string{PreviousRootCertFile, PreviousRootKeyFile, PreviousRootKeyFile + ".uri", CrossFromPreviousFile, CrossToPreviousFile} {
		if exists(filepath.Join(dir, n)) {
			return nil, fmt.Errorf("%w: %s exists from an earlier rollover: once the previous root has left the bundle, move previous-root.* and root-cross-*.pem away", ErrExists, filepath.Join(dir, n))
		}
	}
	old, oldKey, err := LoadRootKeys(dir, cfg.Keys)
	if err != nil {
		return nil, err
	}
	key, ref, err := cfg.Keys.Generate(alg, fmt.Sprintf("mica-root-%d", cfg.Now().Unix()))
	if err != nil {
		return nil, fmt.Errorf("ca: generating the new root key: %w", err)
	}
	rc := cfg.root()
	rc.Validity = validity
	rc.CommonName = fmt.Sprintf("%s Root CA %s", cfg.TrustDomain.Name(), cfg.Now().UTC().Format("2006-01-02"))
	root, err := NewRoot(key, rc)
	if err != nil {
		return nil, err
	}
	from, err := CrossSign(root, old, oldKey, cfg.Rand, cfg.Now)
	if err != nil {
		return nil, err
	}
	to, err := CrossSign(old, root, key, cfg.Rand, cfg.Now)
	if err != nil {
		return nil, err
	}
	// The new root is written under temporary names first, then the
	// current one moves aside and the new one takes its names: a crash
	// leaves either root in root.*, never none.
	if err := writeKeyRef(dir, "next-root.key", ref); err != nil {
		return nil, err
	}
	if err := writeCert(dir, "next-root.pem", root); err != nil {
		return nil, err
	}
	if err := writeCert(dir, CrossFromPreviousFile, from); err != nil {
		return nil, err
	}
	if err := writeCert(dir, CrossToPreviousFile, to); err != nil {
		return nil, err
	}
	renames := [][2]string{{RootKeyFile, PreviousRootKeyFile}, {RootKeyURIFile, PreviousRootKeyFile + ".uri"}, {RootCertFile, PreviousRootCertFile},
		{"next-root.key", RootKeyFile}, {"next-root.key.uri", RootKeyURIFile}, {"next-root.pem", RootCertFile}}
	for _, r := range renames {
		if err := os.Rename(filepath.Join(dir, r[0]), filepath.Join(dir, r[1])); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("ca: %w", err)
		}
	}
	return &Rollover{Root: root, Previous: old, CrossFromPrevious: from, CrossToPrevious: to}, nil
}

// RequestNextIntermediate is RequestIntermediate for a server that already
// serves: the key and request go to next-intermediate.*, to be imported as
// the next CA slot once the root machine has signed the request.
func RequestNextIntermediate(dir string, cfg InitConfig) ([]byte, error) {
	alg, err := cfg.check()
	if err != nil {
		return nil, err
	}
	if err := prepareDir(dir, NextIntermediateKeyFile, NextIntermediateKeyFile+".uri", NextIntermediateCSRFile); err != nil {
		return nil, err
	}
	key, ref, err := cfg.Keys.Generate(alg, fmt.Sprintf("mica-intermediate-%d", cfg.Now().Unix()))
	if err != nil {
		return nil, fmt.Errorf("ca: generating the intermediate key: %w", err)
	}
	der, err := NewIntermediateCSR(key, cfg.intermediate())
	if err != nil {
		return nil, err
	}
	if err := writeKeyRef(dir, NextIntermediateKeyFile, ref); err != nil {
		return nil, err
	}
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	if err := writeFile(filepath.Join(dir, NextIntermediateCSRFile), csrPEM, 0o644); err != nil {
		return nil, err
	}
	return csrPEM, nil
}

// NextIntermediate checks a signed certificate against the pending request
// in next-intermediate.csr and returns where its key is. The caller
// records it as the next CA slot, then calls DonePending.
func NextIntermediate(dir string, certPEM []byte) (*x509.Certificate, custody.Ref, error) {
	cert, err := parsePEMCert(certPEM, "the signed intermediate")
	if err != nil {
		return nil, custody.Ref{}, err
	}
	csrPEM, err := os.ReadFile(filepath.Join(dir, NextIntermediateCSRFile))
	if err != nil {
		return nil, custody.Ref{}, fmt.Errorf("ca: no pending request (%w): run `mica ca request-intermediate --next` first", err)
	}
	block, _ := pem.Decode(csrPEM)
	if block == nil {
		return nil, custody.Ref{}, fmt.Errorf("ca: %s holds no PEM request", NextIntermediateCSRFile)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, custody.Ref{}, fmt.Errorf("ca: %w", err)
	}
	if pub, ok := csr.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(cert.PublicKey) {
		return nil, custody.Ref{}, fmt.Errorf("ca: the certificate is not for the pending key in %s: sign that request", NextIntermediateCSRFile)
	}
	ref, err := KeyRef(dir, NextIntermediateKeyFile)
	if err != nil {
		return nil, custody.Ref{}, err
	}
	return cert, ref, nil
}

// DonePending removes the next intermediate's request and key files once
// the slot holds the key (sealed, or by its URI).
func DonePending(dir string) error {
	for _, n := range []string{NextIntermediateCSRFile, NextIntermediateKeyFile, NextIntermediateKeyFile + ".uri"} {
		if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("ca: %w", err)
		}
	}
	return nil
}
