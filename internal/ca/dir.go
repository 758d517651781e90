package ca

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mica-pki/mica/credential"
	"github.com/mica-pki/mica/internal/atomicfile"
	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/keys/custody"
	"github.com/mica-pki/mica/internal/keys/file"
)

// File names inside a CA directory.
const (
	RootCertFile         = "root.pem"
	RootKeyFile          = "root.key"
	IntermediateCertFile = "intermediate.pem"
	IntermediateKeyFile  = "intermediate.key"
	IntermediateCSRFile  = "intermediate.csr"
	// A key kept in a PKCS#11 token is named by its URI in a file next to
	// where the sealed key would be.
	RootKeyURIFile         = RootKeyFile + ".uri"
	IntermediateKeyURIFile = IntermediateKeyFile + ".uri"
)

var (
	// ErrExists is returned when a directory already holds the files an
	// operation would create.
	ErrExists = errors.New("ca: CA files already exist")
	// ErrNotInitialized is returned when a directory holds no CA.
	ErrNotInitialized = errors.New("ca: no CA in directory")
	// ErrPending is returned by Load while the intermediate has been
	// requested but not yet imported.
	ErrPending = errors.New("ca: intermediate certificate not imported yet")
	// ErrNoRootKey is returned by LoadRoot where the root key is kept
	// elsewhere.
	ErrNoRootKey = errors.New("ca: root key not in directory")
)

// InitConfig configures the directory operations. Init uses every field;
// InitRootOnly the root ones; RequestIntermediate the trust domain,
// algorithm and passphrase.
type InitConfig struct {
	TrustDomain spiffeid.TrustDomain
	// Algorithm of the CA keys; empty means keys.Default.
	Algorithm keys.Algorithm
	// Passphrase encrypts the root and intermediate keys. Required unless
	// Keys keeps them elsewhere.
	Passphrase []byte
	// Keys makes the CA keys; nil means sealed with Passphrase in files.
	Keys custody.Keys

	RootValidity         time.Duration
	IntermediateValidity time.Duration
	PermittedDNSDomains  []string
	PermittedIPRanges    []netip.Prefix

	Rand io.Reader
	Now  func() time.Time
}

func (c InitConfig) root() RootConfig {
	return RootConfig{TrustDomain: c.TrustDomain, Validity: c.RootValidity, Rand: c.Rand, Now: c.Now}
}

func (c InitConfig) intermediate() IntermediateConfig {
	return IntermediateConfig{
		TrustDomain:         c.TrustDomain,
		Validity:            c.IntermediateValidity,
		PermittedDNSDomains: c.PermittedDNSDomains,
		PermittedIPRanges:   c.PermittedIPRanges,
		Rand:                c.Rand,
		Now:                 c.Now,
	}
}

// check validates c and fills in defaults.
func (c *InitConfig) check() (keys.Algorithm, error) {
	c.Rand, c.Now = orDefaults(c.Rand, c.Now)
	if c.TrustDomain.IsZero() {
		return "", errors.New("ca: InitConfig.TrustDomain is required")
	}
	if c.Keys == nil {
		if len(c.Passphrase) == 0 {
			return "", errors.New("ca: a passphrase is required to encrypt the CA keys")
		}
		c.Keys = custody.Sealed(c.Passphrase)
	}
	alg := c.Algorithm
	if alg == "" {
		alg = keys.Default
	}
	if _, err := keys.ParseAlgorithm(string(alg)); err != nil {
		return "", fmt.Errorf("ca: %w", err)
	}
	return alg, nil
}

// Hierarchy is a loaded CA: what a server needs to issue certificates.
type Hierarchy struct {
	Dir          string
	Root         *x509.Certificate
	Intermediate *x509.Certificate
	// IntermediateKey signs workload certificates.
	IntermediateKey crypto.Signer
}

// Init creates a root and an intermediate in dir, both keys encrypted with
// cfg.Passphrase. The root key stays in dir; for a root kept offline use
// InitRootOnly and RequestIntermediate instead.
func Init(dir string, cfg InitConfig) (*Hierarchy, error) {
	alg, err := cfg.check()
	if err != nil {
		return nil, err
	}
	if err := prepareDir(dir, RootCertFile, RootKeyFile, RootKeyURIFile, IntermediateCertFile, IntermediateKeyFile, IntermediateKeyURIFile, IntermediateCSRFile); err != nil {
		return nil, err
	}
	root, rootKey, rootRef, err := makeRoot(alg, cfg)
	if err != nil {
		return nil, err
	}
	intKey, intRef, err := cfg.Keys.Generate(alg, IntermediateKeyLabel(1))
	if err != nil {
		return nil, fmt.Errorf("ca: generating the intermediate key: %w", err)
	}
	csrDER, err := NewIntermediateCSR(intKey, cfg.intermediate())
	if err != nil {
		return nil, err
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("ca: parsing the intermediate request: %w", err)
	}
	inter, err := SignIntermediate(root, rootKey, csr, cfg.intermediate())
	if err != nil {
		return nil, err
	}
	// Keys before certificates: a certificate on disk always has its key.
	if err := writeKeyRef(dir, RootKeyFile, rootRef); err != nil {
		return nil, err
	}
	if err := writeKeyRef(dir, IntermediateKeyFile, intRef); err != nil {
		return nil, err
	}
	if err := writeCert(dir, RootCertFile, root); err != nil {
		return nil, err
	}
	if err := writeCert(dir, IntermediateCertFile, inter); err != nil {
		return nil, err
	}
	return &Hierarchy{Dir: dir, Root: root, Intermediate: inter, IntermediateKey: intKey}, nil
}

// InitRootOnly creates just the root (root.pem and the encrypted root.key)
// in dir, for a machine that stays offline and only signs intermediates.
func InitRootOnly(dir string, cfg InitConfig) (*x509.Certificate, error) {
	alg, err := cfg.check()
	if err != nil {
		return nil, err
	}
	if err := prepareDir(dir, RootCertFile, RootKeyFile, RootKeyURIFile); err != nil {
		return nil, err
	}
	root, _, rootRef, err := makeRoot(alg, cfg)
	if err != nil {
		return nil, err
	}
	if err := writeKeyRef(dir, RootKeyFile, rootRef); err != nil {
		return nil, err
	}
	if err := writeCert(dir, RootCertFile, root); err != nil {
		return nil, err
	}
	return root, nil
}

func makeRoot(alg keys.Algorithm, cfg InitConfig) (*x509.Certificate, crypto.Signer, custody.Ref, error) {
	key, ref, err := cfg.Keys.Generate(alg, RootKeyLabel(1))
	if err != nil {
		return nil, nil, custody.Ref{}, fmt.Errorf("ca: generating the root key: %w", err)
	}
	root, err := NewRoot(key, cfg.root())
	if err != nil {
		return nil, nil, custody.Ref{}, err
	}
	return root, key, ref, nil
}

// LoadRoot reads the root certificate and decrypts the root key, on the
// machine that signs intermediates.
func LoadRoot(dir string, passphrase []byte) (*x509.Certificate, crypto.Signer, error) {
	return LoadRootKeys(dir, custody.Sealed(passphrase))
}

// LoadRootKeys is LoadRoot for a root key in any custody.
func LoadRootKeys(dir string, k custody.Keys) (*x509.Certificate, crypto.Signer, error) {
	return loadRoot(dir, RootCertFile, RootKeyFile, k)
}

// LoadPreviousRootKeys loads the root a rollover replaced (previous-root.*),
// to sign its CRLs until it leaves the bundle.
func LoadPreviousRootKeys(dir string, k custody.Keys) (*x509.Certificate, crypto.Signer, error) {
	return loadRoot(dir, PreviousRootCertFile, PreviousRootKeyFile, k)
}

func loadRoot(dir, certFile, keyFile string, k custody.Keys) (*x509.Certificate, crypto.Signer, error) {
	root, err := readCert(dir, certFile)
	if err != nil {
		return nil, nil, err
	}
	keyPath := filepath.Join(dir, keyFile)
	if !exists(keyPath) && !exists(keyPath+".uri") {
		return nil, nil, fmt.Errorf("%w: %s does not exist: sign intermediates on the machine that holds the root key", ErrNoRootKey, keyPath)
	}
	key, err := openKey(dir, keyFile, k)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: root key: %w", err)
	}
	if err := matches(key, root, keyPath, certFile); err != nil {
		return nil, nil, err
	}
	return root, key, nil
}

// RequestIntermediate starts an intermediate on a server whose root is
// offline: it writes a new encrypted intermediate.key and intermediate.csr
// in dir and returns the request as PEM, to be signed on the root machine
// (SignIntermediate) and brought back with ImportIntermediate.
func RequestIntermediate(dir string, cfg InitConfig) ([]byte, error) {
	alg, err := cfg.check()
	if err != nil {
		return nil, err
	}
	if err := prepareDir(dir, IntermediateKeyFile, IntermediateKeyURIFile, IntermediateCSRFile, IntermediateCertFile); err != nil {
		return nil, err
	}
	key, ref, err := cfg.Keys.Generate(alg, IntermediateKeyLabel(1))
	if err != nil {
		return nil, fmt.Errorf("ca: generating the intermediate key: %w", err)
	}
	der, err := NewIntermediateCSR(key, cfg.intermediate())
	if err != nil {
		return nil, err
	}
	if err := writeKeyRef(dir, IntermediateKeyFile, ref); err != nil {
		return nil, err
	}
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	if err := writeFile(filepath.Join(dir, IntermediateCSRFile), csrPEM, 0o644); err != nil {
		return nil, err
	}
	return csrPEM, nil
}

// ImportIntermediate installs the signed intermediate certificate (PEM) in
// dir after checking that it is for the pending key in intermediate.csr,
// that it chains to root.pem and that it passes the lints. It returns the
// parsed certificate.
func ImportIntermediate(dir string, certPEM []byte) (*x509.Certificate, error) {
	cert, err := parsePEMCert(certPEM, "the imported intermediate")
	if err != nil {
		return nil, err
	}
	certPath := filepath.Join(dir, IntermediateCertFile)
	if _, err := os.Stat(certPath); err == nil {
		return nil, fmt.Errorf("%w: %s already exists: this directory already has an intermediate", ErrExists, certPath)
	}
	csrPath := filepath.Join(dir, IntermediateCSRFile)
	csrPEM, err := os.ReadFile(csrPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist: run `mica ca request-intermediate` first", ErrNotInitialized, csrPath)
	} else if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("ca: %s holds no PEM certificate request", csrPath)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ca: parsing %s: %w", csrPath, err)
	}
	if pub, ok := csr.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("ca: the imported certificate is not for the pending key in %s: sign that request, not another one", csrPath)
	}
	root, err := readCert(dir, RootCertFile)
	if err != nil {
		return nil, err
	}
	if err := checkIntermediate(cert, root); err != nil {
		return nil, err
	}
	if err := issuance.Lint(cert.Raw); err != nil {
		return nil, fmt.Errorf("ca: imported intermediate: %w", err)
	}
	if err := writeCert(dir, IntermediateCertFile, cert); err != nil {
		return nil, err
	}
	if err := os.Remove(csrPath); err != nil {
		return nil, fmt.Errorf("ca: the intermediate is installed but the request could not be removed: %w", err)
	}
	return cert, nil
}

// Load reads a CA directory for serving: the root and intermediate
// certificates and the decrypted intermediate key. The root key is not
// needed and may be absent.
func Load(dir string, passphrase []byte) (*Hierarchy, error) {
	return LoadKeys(dir, custody.Sealed(passphrase))
}

// LoadKeys is Load for CA keys in any custody.
func LoadKeys(dir string, k custody.Keys) (*Hierarchy, error) {
	h, err := LoadCertificates(dir)
	if err != nil {
		return nil, err
	}
	keyPath := filepath.Join(dir, IntermediateKeyFile)
	key, err := openKey(dir, IntermediateKeyFile, k)
	if err != nil {
		return nil, fmt.Errorf("ca: intermediate key: %w", err)
	}
	if err := matches(key, h.Intermediate, keyPath, IntermediateCertFile); err != nil {
		return nil, err
	}
	h.IntermediateKey = key
	return h, nil
}

// LoadCertificates reads and checks the CA directory's root and
// intermediate certificates without opening any key: a server that rotates
// its CA takes the keys from the CA slots.
func LoadCertificates(dir string) (*Hierarchy, error) {
	certPath := filepath.Join(dir, IntermediateCertFile)
	if _, err := os.Stat(certPath); errors.Is(err, fs.ErrNotExist) {
		if _, err := os.Stat(filepath.Join(dir, IntermediateCSRFile)); err == nil {
			return nil, fmt.Errorf("%w: %s does not exist yet: sign %s on the root machine with `mica ca sign-intermediate` and install the result with `mica ca import-intermediate`",
				ErrPending, certPath, filepath.Join(dir, IntermediateCSRFile))
		}
		if _, err := os.Stat(filepath.Join(dir, RootCertFile)); err == nil {
			return nil, fmt.Errorf("%w: %s does not exist: run `mica ca request-intermediate` (root kept offline) or `mica init`", ErrNotInitialized, certPath)
		}
	}
	root, err := readCert(dir, RootCertFile)
	if err != nil {
		return nil, err
	}
	inter, err := readCert(dir, IntermediateCertFile)
	if err != nil {
		return nil, err
	}
	if err := checkIntermediate(inter, root); err != nil {
		return nil, err
	}
	return &Hierarchy{Dir: dir, Root: root, Intermediate: inter}, nil
}

func checkIntermediate(inter, root *x509.Certificate) error {
	if !inter.IsCA || inter.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("ca: intermediate %q is not a CA certificate", inter.Subject.CommonName)
	}
	if err := inter.CheckSignatureFrom(root); err != nil {
		return fmt.Errorf("ca: intermediate %q was not signed by root %q in %s: %w", inter.Subject.CommonName, root.Subject.CommonName, RootCertFile, err)
	}
	return nil
}

func matches(key crypto.Signer, cert *x509.Certificate, keyPath, certFile string) error {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return fmt.Errorf("ca: %s is not the key of %s: restore the matching pair", keyPath, certFile)
	}
	return nil
}

// prepareDir makes dir (0700) if needed and refuses to go on if any of the
// named files exist, so no operation ever replaces a CA by accident.
func prepareDir(dir string, names ...string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	for _, n := range names {
		p := filepath.Join(dir, n)
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%w: %s exists: use another directory, or move the old CA away first", ErrExists, p)
		}
	}
	return nil
}

// writeKeyRef records where a CA key is: a sealed key goes to name (0600),
// a key held elsewhere is named by its URI in name.uri.
func writeKeyRef(dir, name string, ref custody.Ref) error {
	if len(ref.Sealed) > 0 {
		return writeFile(filepath.Join(dir, name), ref.Sealed, 0o600)
	}
	return writeFile(filepath.Join(dir, name+".uri"), []byte(ref.URI+"\n"), 0o644)
}

// KeyRef reads where the CA key name (RootKeyFile, IntermediateKeyFile) is
// kept: its URI file if there is one, else the sealed key file.
func KeyRef(dir, name string) (custody.Ref, error) {
	if data, err := os.ReadFile(filepath.Join(dir, name+".uri")); err == nil {
		uri := strings.TrimSpace(string(data))
		if uri == "" || strings.ContainsAny(uri, "\n\r") {
			return custody.Ref{}, fmt.Errorf("ca: %s holds no key URI", filepath.Join(dir, name+".uri"))
		}
		return custody.Ref{URI: uri}, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return custody.Ref{}, fmt.Errorf("ca: %w", err)
	}
	sealed, err := file.ReadSealed(filepath.Join(dir, name))
	if err != nil {
		return custody.Ref{}, err
	}
	return custody.Ref{Sealed: sealed}, nil
}

func openKey(dir, name string, k custody.Keys) (crypto.Signer, error) {
	ref, err := KeyRef(dir, name)
	if err != nil {
		return nil, err
	}
	key, err := k.Open(ref)
	if err != nil && len(ref.Sealed) > 0 {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, name), err)
	}
	return key, err
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// RootKeyLabel and IntermediateKeyLabel name generation n's key where the
// custody backend keeps labels (a PKCS#11 token's CKA_LABEL).
func RootKeyLabel(n int64) string         { return fmt.Sprintf("mica-root-%d", n) }
func IntermediateKeyLabel(n int64) string { return fmt.Sprintf("mica-intermediate-%d", n) }

func writeCert(dir, name string, cert *x509.Certificate) error {
	return writeFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644)
}

// writeFile writes atomically and never replaces an existing file
// (atomicfile.Create hard-links the synced temporary file into place, which
// fails if the name is taken).
func writeFile(path string, data []byte, perm fs.FileMode) error {
	err := atomicfile.Create(path, data, perm)
	switch {
	case errors.Is(err, atomicfile.ErrExists):
		return fmt.Errorf("%w: %s exists", ErrExists, path)
	case err != nil:
		return fmt.Errorf("ca: %w", err)
	}
	return nil
}

func readCert(dir, name string) (*x509.Certificate, error) {
	p := filepath.Join(dir, name)
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		if name == RootCertFile {
			return nil, fmt.Errorf("%w: %s does not exist: run `mica init` to create a CA here, or copy root.pem from the root machine", ErrNotInitialized, p)
		}
		return nil, fmt.Errorf("%w: %s does not exist", ErrNotInitialized, p)
	} else if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	return parsePEMCert(data, p)
}

// parsePEMCert reads the first certificate of a PEM file.
func parsePEMCert(data []byte, what string) (*x509.Certificate, error) {
	certs, err := credential.ParseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("ca: %s holds no usable PEM certificate: %w", what, err)
	}
	return certs[0], nil
}
