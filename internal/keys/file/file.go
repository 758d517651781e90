// Package file keeps private keys in PEM files: CA keys encrypted with a
// passphrase ([Write], [Load]) and end-entity keys in the clear for the
// clients that own them ([WritePlain], [LoadPlain]). Every key it returns is a
// [crypto.Signer], so callers do not care whether a key came from here or
// from an HSM.
//
// Start with [Write] and [Load]; [LoadOrCreate] is the one way to make a
// server key on first use, safe when several processes start at once.
// Encrypted keys are PKCS#8
// "ENCRYPTED PRIVATE KEY" blocks protected with PBES2: scrypt (N=2^14, r=8,
// p=1, 16-byte salt) derives an AES-256-CBC key. OpenSSL reads them too
// (openssl pkey -in ca.key).
//
// Files are written atomically by package atomicfile (temporary file in the
// same directory, fsync, then link or rename, then fsync of the directory)
// with mode 0600, and a
// key file that group or others can read is refused when loading. Neither
// key material nor passphrases ever appear in errors.
package file

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/youmark/pkcs8"

	"github.com/mica-pki/mica/internal/atomicfile"
)

const (
	encryptedBlock = "ENCRYPTED PRIVATE KEY"
	plainBlock     = "PRIVATE KEY"
)

// kdf is the key derivation for encrypted keys. scrypt is memory-hard, so a
// stolen key file is far more expensive to brute-force on GPUs than with
// PBKDF2. N=2^14, r=8 (16 MiB, some tens of milliseconds per load, paid once
// at start-up) is what `openssl pkcs8 -scrypt` uses; N=2^15 would exceed
// OpenSSL's default scrypt memory limit and make the files unreadable there,
// and operators need to inspect and back up keys with standard tools.
var kdf pkcs8.KDFOpts = pkcs8.ScryptOpts{
	SaltSize:                 16,
	CostParameter:            1 << 14,
	BlockSize:                8,
	ParallelizationParameter: 1,
}

var (
	// ErrWrongPassphrase is returned by Load when the passphrase does not
	// decrypt the key.
	ErrWrongPassphrase = errors.New("keys/file: wrong passphrase")
	// ErrExists is returned by Write and WritePlain when the file already
	// exists; use Replace or ReplacePlain to overwrite on purpose.
	ErrExists = errors.New("keys/file: key file already exists")
	// ErrEmptyPassphrase is returned when a passphrase is empty.
	ErrEmptyPassphrase = errors.New("keys/file: empty passphrase")
)

// PermissionError is returned when a key file can be read or written by
// users other than its owner.
type PermissionError struct {
	Path string
	Mode fs.FileMode
}

func (e *PermissionError) Error() string {
	return fmt.Sprintf("keys/file: %s has mode %04o, so other users can read or change it: run chmod 600 %s", e.Path, e.Mode.Perm(), e.Path)
}

// Write stores key encrypted with passphrase at path (mode 0600). It refuses
// to overwrite an existing file with an error wrapping [ErrExists].
func Write(path string, key crypto.Signer, passphrase []byte) error {
	der, err := encrypt(key, passphrase)
	if err != nil {
		return err
	}
	return writeAtomic(path, pem.EncodeToMemory(&pem.Block{Type: encryptedBlock, Bytes: der}), false)
}

// Replace is Write that atomically replaces an existing file: readers see
// either the old key or the new one, never a mix.
func Replace(path string, key crypto.Signer, passphrase []byte) error {
	der, err := encrypt(key, passphrase)
	if err != nil {
		return err
	}
	return writeAtomic(path, pem.EncodeToMemory(&pem.Block{Type: encryptedBlock, Bytes: der}), true)
}

func encrypt(key crypto.Signer, passphrase []byte) ([]byte, error) {
	if len(passphrase) == 0 {
		// pkcs8 would silently write an unencrypted key for an empty password.
		return nil, fmt.Errorf("%w: a CA key must be encrypted; give a passphrase", ErrEmptyPassphrase)
	}
	der, err := pkcs8.MarshalPrivateKey(key, passphrase, &pkcs8.Opts{Cipher: pkcs8.AES256CBC, KDFOpts: kdf})
	if err != nil {
		return nil, fmt.Errorf("keys/file: encrypting %T key: %w", key, scrub(err))
	}
	return der, nil
}

// Load reads a key written by [Write]. A wrong passphrase gives an error
// wrapping [ErrWrongPassphrase]; a file readable by group or others gives a
// [*PermissionError].
func Load(path string, passphrase []byte) (crypto.Signer, error) {
	if len(passphrase) == 0 {
		return nil, fmt.Errorf("%w: %s is encrypted; give its passphrase", ErrEmptyPassphrase, path)
	}
	der, err := readBlock(path, encryptedBlock)
	if err != nil {
		return nil, err
	}
	key, _, err := pkcs8.ParsePrivateKey(der, passphrase)
	if err != nil {
		// With AES-CBC a wrong passphrase shows up as garbage that does not
		// parse; the library cannot tell that from a damaged file, and a
		// wrong passphrase is by far the likelier cause.
		return nil, fmt.Errorf("%w for %s (or the file is damaged): check the passphrase file or environment variable", ErrWrongPassphrase, path)
	}
	return asSigner(path, key)
}

// WritePlain stores an unencrypted end-entity key as a PKCS#8 "PRIVATE KEY"
// block at path (mode 0600). It refuses to overwrite an existing file with an
// error wrapping [ErrExists]. CA keys must use [Write].
func WritePlain(path string, key crypto.Signer) error {
	return writePlain(path, key, false)
}

// ReplacePlain is WritePlain that atomically replaces an existing file, the
// way an agent swaps in a renewed key.
func ReplacePlain(path string, key crypto.Signer) error {
	return writePlain(path, key, true)
}

func writePlain(path string, key crypto.Signer, overwrite bool) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("keys/file: encoding %T key: %w", key, scrub(err))
	}
	return writeAtomic(path, pem.EncodeToMemory(&pem.Block{Type: plainBlock, Bytes: der}), overwrite)
}

// LoadPlain reads a key written by [WritePlain].
func LoadPlain(path string) (crypto.Signer, error) {
	der, err := readBlock(path, plainBlock)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("keys/file: %s does not hold a valid PKCS#8 private key", path)
	}
	return asSigner(path, key)
}

func asSigner(path string, key any) (crypto.Signer, error) {
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("keys/file: %s holds a %T key, which cannot sign", path, key)
	}
	return s, nil
}

// readBlock reads the single PEM block of the wanted type from a key file
// that only its owner can access.
func readBlock(path, want string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("keys/file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("keys/file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, &PermissionError{Path: path, Mode: st.Mode()}
	}
	data, err := readAll(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("keys/file: reading %s: %w", path, err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("keys/file: %s holds no PEM block: expected %q", path, want)
	}
	if block.Type != want {
		switch want {
		case encryptedBlock:
			return nil, fmt.Errorf("keys/file: %s holds a %q block, not an encrypted key: CA keys must be encrypted; re-create it with a passphrase", path, block.Type)
		default:
			return nil, fmt.Errorf("keys/file: %s holds a %q block, want %q", path, block.Type, want)
		}
	}
	return block.Bytes, nil
}

func readAll(f *os.File, size int64) ([]byte, error) {
	const limit = 1 << 20 // key files are a few KiB; refuse to slurp anything huge
	if size > limit {
		return nil, fmt.Errorf("file is %d bytes, too large for a key", size)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeAtomic installs data at path with mode 0600 through atomicfile.
// Without overwrite it refuses an existing file (link(2) fails if the name
// is taken), so two writers can never clobber each other's key.
func writeAtomic(path string, data []byte, overwrite bool) error {
	var err error
	if overwrite {
		err = atomicfile.Write(path, data, 0o600)
	} else {
		err = atomicfile.Create(path, data, 0o600)
	}
	switch {
	case errors.Is(err, atomicfile.ErrExists):
		return fmt.Errorf("%w: %s: move it away first, or replace it on purpose", ErrExists, path)
	case err != nil:
		return fmt.Errorf("keys/file: %w", err)
	}
	return nil
}

// scrub keeps only the text of library errors so no wrapped value that might
// hold key material travels further.
func scrub(err error) error { return errors.New(err.Error()) }
