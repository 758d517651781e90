package file

import (
	"bytes"
	"fmt"
	"os"
)

// Passphrase reads a CA key passphrase from the file named by fileFlag (the
// value of a --passphrase-file style flag) or, when that is empty, from the
// environment variable envVar. One trailing newline is removed from a file
// so that `echo secret > file` works. A file wins over the environment
// because it was given explicitly.
func Passphrase(fileFlag, envVar string) ([]byte, error) {
	if fileFlag != "" {
		data, err := os.ReadFile(fileFlag)
		if err != nil {
			return nil, fmt.Errorf("keys/file: reading passphrase file: %w", err)
		}
		data = bytes.TrimSuffix(data, []byte("\n"))
		data = bytes.TrimSuffix(data, []byte("\r"))
		if len(data) == 0 {
			return nil, fmt.Errorf("%w: passphrase file %s is empty: write the passphrase into it", ErrEmptyPassphrase, fileFlag)
		}
		return data, nil
	}
	if envVar == "" {
		return nil, fmt.Errorf("%w: no passphrase given: name a passphrase file", ErrEmptyPassphrase)
	}
	v, ok := os.LookupEnv(envVar)
	if !ok {
		return nil, fmt.Errorf("%w: no passphrase given: name a passphrase file or set the %s environment variable", ErrEmptyPassphrase, envVar)
	}
	if v == "" {
		return nil, fmt.Errorf("%w: the %s environment variable is empty: set it to the passphrase or name a passphrase file", ErrEmptyPassphrase, envVar)
	}
	return []byte(v), nil
}
