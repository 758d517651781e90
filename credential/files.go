package credential

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// The names of the files in a credential directory.
const (
	KeyFile       = "key.pem"       // the private key, PKCS#8, mode 0600
	CertFile      = "cert.pem"      // the leaf
	ChainFile     = "chain.pem"     // the intermediates, the leaf's issuer first
	FullchainFile = "fullchain.pem" // leaf and intermediates
	BundleFile    = "bundle.pem"    // the trusted roots
	// DataLink is the symbolic link to the current version; one rename
	// of it switches every file at once.
	DataLink = "..data"
)

// names are the files of a credential, in the order they are written.
var names = [...]string{KeyFile, CertFile, ChainFile, FullchainFile, BundleFile}

// maxFileBytes bounds what is read from one file: a credential is a few
// KiB; anything this large is not one.
const maxFileBytes = 1 << 20

// Files names the files of one credential by path. Reading needs Key and
// Cert; Chain and Bundle are read when they exist; Fullchain is never read
// (it repeats Cert and Chain).
type Files struct {
	Key, Cert, Chain, Fullchain, Bundle string
}

// In returns the standard names in dir.
func In(dir string) Files {
	return Files{
		Key:       filepath.Join(dir, KeyFile),
		Cert:      filepath.Join(dir, CertFile),
		Chain:     filepath.Join(dir, ChainFile),
		Fullchain: filepath.Join(dir, FullchainFile),
		Bundle:    filepath.Join(dir, BundleFile),
	}
}

// path returns the path of the file called name (one of the constants).
func (f Files) path(name string) string {
	switch name {
	case KeyFile:
		return f.Key
	case CertFile:
		return f.Cert
	case ChainFile:
		return f.Chain
	case FullchainFile:
		return f.Fullchain
	case BundleFile:
		return f.Bundle
	}
	return ""
}

// Read reads the credential from the files, each opened once, and checks
// that the key matches the certificate (ErrMismatch otherwise). Cert may
// hold the intermediates itself; Chain is appended only when it does not.
// An absent or empty Chain or Bundle means none.
// A missing Key or Cert gives an error wrapping fs.ErrNotExist.
//
// The files are read one after another: when a writer that does not switch
// them together (a directory of plain files) is at work, Read may fail with
// ErrMismatch and succeed a moment later. Dir.Load does not have that
// window.
func (f Files) Read() (*Credential, error) {
	return f.read(false)
}

// read is Read; complete says that Chain and Bundle must exist too (a
// version directory always has all five files, empty for none), so that
// their absence means the version was removed while it was being read.
func (f Files) read(complete bool) (*Credential, error) {
	certPEM, err := readFile(f.Cert, true)
	if err != nil {
		return nil, err
	}
	keyPEM, err := readFile(f.Key, true)
	if err != nil {
		return nil, err
	}
	chainPEM, err := readFile(f.Chain, complete)
	if err != nil {
		return nil, err
	}
	bundlePEM, err := readFile(f.Bundle, complete)
	if err != nil {
		return nil, err
	}
	chain, err := ParseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, f.Cert)
	}
	if len(chain) == 1 && len(chainPEM) > 0 {
		inter, err := ParseCertificates(chainPEM)
		if err != nil {
			return nil, fmt.Errorf("%w (in %s)", err, f.Chain)
		}
		chain = append(chain, inter...)
	}
	key, err := ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, f.Key)
	}
	var roots []*x509.Certificate
	if len(bundlePEM) > 0 {
		if roots, err = ParseCertificates(bundlePEM); err != nil {
			return nil, fmt.Errorf("%w (in %s)", err, f.Bundle)
		}
	}
	c, err := New(chain, key, roots)
	if err != nil {
		return nil, fmt.Errorf("%w: %s and %s are not a pair", err, f.Cert, f.Key)
	}
	return c, nil
}

// readFile reads a file of at most maxFileBytes. An optional file that is
// absent (or has no name) reads as nil.
func readFile(path string, required bool) ([]byte, error) {
	if path == "" {
		if required {
			return nil, fmt.Errorf("credential: no file named: %w", fs.ErrNotExist)
		}
		return nil, nil
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) && !required {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("credential: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("credential: reading %s: %w", path, err)
	}
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("credential: %s is larger than %d bytes: not a credential file", path, maxFileBytes)
	}
	return data, nil
}
