package file

import (
	"crypto"
	"encoding/pem"
	"fmt"

	"github.com/youmark/pkcs8"
)

// Seal encrypts key with passphrase exactly as [Write] does, but returns the
// PEM instead of writing a file: for keys kept somewhere other than a file
// (the database's CA slots), which [Unseal] opens again.
func Seal(key crypto.Signer, passphrase []byte) ([]byte, error) {
	der, err := encrypt(key, passphrase)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: encryptedBlock, Bytes: der}), nil
}

// Unseal decrypts a key sealed by [Seal] (or the content of a file written
// by [Write]). what names it in errors.
func Unseal(sealed, passphrase []byte, what string) (crypto.Signer, error) {
	if len(passphrase) == 0 {
		return nil, fmt.Errorf("%w: %s is encrypted; give its passphrase", ErrEmptyPassphrase, what)
	}
	block, _ := pem.Decode(sealed)
	if block == nil || block.Type != encryptedBlock {
		return nil, fmt.Errorf("keys/file: %s is not an encrypted private key", what)
	}
	key, _, err := pkcs8.ParsePrivateKey(block.Bytes, passphrase)
	if err != nil {
		return nil, fmt.Errorf("%w for %s (or it is damaged): check the passphrase file or environment variable", ErrWrongPassphrase, what)
	}
	return asSigner(what, key)
}

// ReadSealed reads the encrypted key file at path, as [Load] would (only
// its owner may read it, one PEM block, encrypted), without decrypting it:
// for callers that open keys through a custody backend.
func ReadSealed(path string) ([]byte, error) {
	der, err := readBlock(path, encryptedBlock)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: encryptedBlock, Bytes: der}), nil
}
