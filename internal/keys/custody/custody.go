// Package custody decides where mica's CA keys live, makes new ones there
// and finds them again. A key is either sealed (encrypted PKCS#8 under the
// CA passphrase, kept in a file or in the database next to the CA slot it
// signs for) or inside a PKCS#11 token, where it is generated as a
// sensitive, never-extractable object and signs without ever leaving. The
// choice is mica.yaml's key_backend; whichever it is, a key is a
// [crypto.Signer] and a [Ref] is what mica stores to find it again.
//
// Start with [New] and the [Keys] it returns.
//
// # A cloud KMS
//
// No KMS backend is built in, and the seam is [Keys]: a KMS backend's
// Generate creates a key in the KMS (the label as its alias) and returns a
// Ref whose URI names it (for example "awskms:arn:…" or
// "gcpkms:projects/…/cryptoKeyVersions/1"); Open returns a crypto.Signer
// whose Public is read once from the KMS and whose Sign calls the KMS's
// asymmetric-sign API with the digest. Nothing else in mica changes: the
// CA slots store the Ref, issuance signs through the Signer. Add the
// backend as a package under internal/keys and one case in [New].
package custody

import (
	"crypto"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/keys/file"
	"github.com/mica-pki/mica/internal/keys/pkcs11"
)

// Backend names where new CA keys are made.
type Backend string

const (
	// File seals keys with the CA passphrase (the default).
	File Backend = "file"
	// PKCS11 makes keys inside a PKCS#11 token.
	PKCS11 Backend = "pkcs11"
	// KMS is reserved for a cloud KMS backend (see the package comment);
	// none is built in.
	KMS Backend = "kms"
)

// ParseBackend reads a backend name; empty means File.
func ParseBackend(s string) (Backend, error) {
	switch b := Backend(strings.ToLower(strings.TrimSpace(s))); b {
	case "":
		return File, nil
	case File, PKCS11, KMS:
		return b, nil
	}
	return "", fmt.Errorf("custody: key backend %q is unknown: use file or pkcs11", s)
}

// Ref names a key in custody: what mica stores to find it again. Exactly one
// field is set.
type Ref struct {
	// URI names a key held elsewhere: "pkcs11:…" (RFC 7512) for a key
	// inside a token.
	URI string
	// Sealed is the key itself, encrypted with the CA passphrase (PEM
	// "ENCRYPTED PRIVATE KEY", as keys/file writes it).
	Sealed []byte
}

// String names the key in logs and status output without its content.
func (r Ref) String() string {
	if r.URI != "" {
		return r.URI
	}
	if len(r.Sealed) > 0 {
		return "sealed with the CA passphrase"
	}
	return "no key"
}

// Keys makes and opens CA keys. Implementations are safe for concurrent
// use.
type Keys interface {
	// Backend is where Generate makes keys.
	Backend() Backend
	// Generate makes a new key of alg, labelled label where the backend
	// keeps labels, and returns it with its Ref.
	Generate(alg keys.Algorithm, label string) (crypto.Signer, Ref, error)
	// Open finds the key a Ref names. Every backend opens sealed keys (when
	// it has the passphrase), so a CA that moves to an HSM keeps its
	// existing keys working until they rotate out.
	Open(ref Ref) (crypto.Signer, error)
	// Close releases the backend (a token's sessions).
	Close() error
}

// Config chooses and configures the backend.
type Config struct {
	Backend Backend
	// Passphrase seals and opens sealed keys. Required for File; for
	// PKCS11 it is needed only to open keys sealed before the move.
	Passphrase []byte
	// PKCS11 is the token, for the PKCS11 backend.
	PKCS11 pkcs11.Config
}

// New opens the configured backend.
func New(cfg Config) (Keys, error) {
	switch cfg.Backend {
	case File, "":
		if len(cfg.Passphrase) == 0 {
			return nil, errors.New("custody: sealed CA keys need the CA passphrase: pass --passphrase-file or set MICA_PASSPHRASE")
		}
		return sealed{pass: cfg.Passphrase}, nil
	case PKCS11:
		tok, err := pkcs11.Open(cfg.PKCS11)
		if err != nil {
			return nil, err
		}
		return &token{sealed: sealed{pass: cfg.Passphrase}, tok: tok}, nil
	case KMS:
		return nil, errors.New("custody: no KMS backend is built into this mica: see the custody package's documentation for the seam, or use key_backend file or pkcs11")
	}
	return nil, fmt.Errorf("custody: key backend %q is unknown: use file or pkcs11", cfg.Backend)
}

// Sealed is the File backend on its own, for callers that only have a
// passphrase.
func Sealed(passphrase []byte) Keys { return sealed{pass: passphrase} }

type sealed struct{ pass []byte }

func (s sealed) Backend() Backend { return File }

func (s sealed) Generate(alg keys.Algorithm, _ string) (crypto.Signer, Ref, error) {
	k, err := keys.Generate(alg, rand.Reader)
	if err != nil {
		return nil, Ref{}, fmt.Errorf("custody: %w", err)
	}
	pem, err := file.Seal(k, s.pass)
	if err != nil {
		return nil, Ref{}, err
	}
	return k, Ref{Sealed: pem}, nil
}

func (s sealed) Open(ref Ref) (crypto.Signer, error) {
	switch {
	case len(ref.Sealed) > 0:
		return file.Unseal(ref.Sealed, s.pass, "a sealed CA key")
	case strings.HasPrefix(ref.URI, pkcs11.Scheme):
		return nil, fmt.Errorf("custody: key %s is inside a PKCS#11 token, and key_backend is file: configure key_backend: pkcs11 with that token", ref.URI)
	}
	return nil, fmt.Errorf("custody: cannot open key %s with the file backend", ref)
}

func (s sealed) Close() error { return nil }

type token struct {
	sealed
	tok *pkcs11.Token
}

func (t *token) Backend() Backend { return PKCS11 }

func (t *token) Generate(alg keys.Algorithm, label string) (crypto.Signer, Ref, error) {
	k, err := t.tok.Generate(alg, label)
	if err != nil {
		return nil, Ref{}, err
	}
	return k, Ref{URI: k.URI().String()}, nil
}

func (t *token) Open(ref Ref) (crypto.Signer, error) {
	if ref.URI == "" {
		return t.sealed.Open(ref)
	}
	u, err := pkcs11.ParseURI(ref.URI)
	if err != nil {
		return nil, err
	}
	return t.tok.Find(u)
}

func (t *token) Close() error { return t.tok.Close() }

// Destroyer is the optional ability of a backend that keeps keys of its own
// (a token) to destroy one: a key made for a step that did not happen (two
// servers raced to prepare the same CA) is not left behind.
type Destroyer interface {
	Destroy(ref Ref) error
}

func (t *token) Destroy(ref Ref) error {
	if ref.URI == "" {
		return nil
	}
	u, err := pkcs11.ParseURI(ref.URI)
	if err != nil {
		return err
	}
	return t.tok.Destroy(u)
}
