package file

import (
	"crypto"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"

	"github.com/mica-pki/mica/internal/keys"
)

// LoadOrCreate loads the encrypted key at path, or, when there is none yet,
// generates one of alg and writes it (mode 0600, encrypted like [Write]);
// created says which. Callers racing on one path — replicas starting
// together on a shared data directory, or goroutines — all end up with the
// same key: [Write] links the finished file into place and refuses to
// replace one, so the first writer wins and every caller then loads what
// it wrote. A key of another algorithm at path is an error, never replaced.
func LoadOrCreate(path string, passphrase []byte, alg keys.Algorithm) (key crypto.Signer, created bool, err error) {
	key, err = Load(path, passphrase)
	if errors.Is(err, fs.ErrNotExist) {
		if created, err = create(path, passphrase, alg); err != nil {
			return nil, false, err
		}
		// Load even what this call wrote: it proves the passphrase opens
		// the file, and a loser of the race gets the winner's key.
		key, err = Load(path, passphrase)
	}
	if err != nil {
		return nil, false, err
	}
	got, err := keys.AlgorithmOf(key.Public())
	if err != nil || got != alg {
		return nil, false, fmt.Errorf("keys/file: %s holds an %s key, not the %s key that belongs there: restore the right file from a backup", path, describe(got, err), alg)
	}
	return key, created, nil
}

// create writes a new key of alg at path unless another writer got there
// first, and says whether it was this call.
func create(path string, passphrase []byte, alg keys.Algorithm) (bool, error) {
	fresh, err := keys.Generate(alg, rand.Reader)
	if err != nil {
		return false, err
	}
	switch err := Write(path, fresh, passphrase); {
	case err == nil:
		return true, nil
	case errors.Is(err, ErrExists):
		return false, nil
	default:
		return false, err
	}
}

func describe(alg keys.Algorithm, err error) string {
	if err != nil {
		return "unsupported"
	}
	return string(alg)
}
