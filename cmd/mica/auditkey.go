package main

import (
	"crypto"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/mica-pki/mica/internal/atomicfile"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/keys/custody"
)

// auditKeyLabel names the audit log's key in a PKCS#11 token.
const auditKeyLabel = "mica-audit"

// auditSigner is the Ed25519 key that signs the audit log's checkpoints.
// With key_backend pkcs11 it lives in the token (signing with CKM_EDDSA),
// named by audit.key.uri, made on the first start that has none; a sealed
// audit.key from before the move keeps being used. Otherwise it is the
// sealed file, as ensureAuditKey keeps it.
func auditSigner(d dataPaths, passphrase []byte, caKeys custody.Keys) (crypto.Signer, error) {
	if caKeys.Backend() != custody.PKCS11 || fileExists(d.auditKey()) {
		return loadOrCreateAuditKey(d, passphrase)
	}
	uriPath := d.auditKey() + ".uri"
	if data, err := os.ReadFile(uriPath); err == nil {
		return caKeys.Open(custody.Ref{URI: strings.TrimSpace(string(data))})
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key, ref, err := caKeys.Generate(keys.Ed25519, auditKeyLabel)
	if err != nil {
		return nil, fmt.Errorf("making the audit log key in the token: %w", err)
	}
	// Create refuses to replace a file: of two servers starting together,
	// one names its key; the other destroys its own and uses that one.
	if err := atomicfile.Create(uriPath, []byte(ref.URI+"\n"), 0o644); err != nil {
		if d, ok := caKeys.(custody.Destroyer); ok {
			d.Destroy(ref)
		}
		data, rerr := os.ReadFile(uriPath)
		if rerr != nil {
			return nil, err
		}
		return caKeys.Open(custody.Ref{URI: strings.TrimSpace(string(data))})
	}
	return key, nil
}
