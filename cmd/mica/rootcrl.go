package main

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/atomicfile"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/ca"
	"github.com/mica-pki/mica/internal/crl"
	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/issuance"
)

// RootCRLFile is where `mica ca root-crl` writes the root's CRL by default
// and where `mica serve` looks for it to publish.
const RootCRLFile = "root.crl"

// rootCRLFileOf is where a server finds the CRL of a root kept offline
// that is not its data directory's own (a rolled-over root): named by the
// root's key identifier, next to root.crl.
func rootCRLFileOf(root *x509.Certificate) string {
	return "root-" + hex.EncodeToString(root.SubjectKeyId) + ".crl"
}

// revokedList collects repeated --revoke SERIAL[:reason] flags.
type revokedList []crl.Entry

func (l *revokedList) String() string { return fmt.Sprint(len(*l)) }

func (l *revokedList) Set(v string) error {
	// The reason follows the last colon when what follows is not hex: a
	// serial may itself hold colons (01:A2:B0), as openssl prints it.
	serialText, reasonName := v, ""
	if i := strings.LastIndexByte(v, ':'); i >= 0 && !isHex(v[i+1:]) {
		serialText, reasonName = v[:i], v[i+1:]
		if reasonName == "" {
			return fmt.Errorf("%q ends with a colon: write SERIAL or SERIAL:reason", v)
		}
	}
	hexSerial, err := authority.ParseSerial(serialText)
	if err != nil {
		return err
	}
	serial, _ := new(big.Int).SetString(hexSerial, 16)
	if serial.Sign() <= 0 {
		return fmt.Errorf("serial %q is zero: no certificate has it", serialText)
	}
	reason, err := client.ReasonCode(reasonName)
	if err != nil {
		return err
	}
	*l = append(*l, crl.Entry{Serial: serial.Bytes(), RevokedAt: time.Now(), Reason: reason})
	return nil
}

func isHex(s string) bool {
	_, ok := new(big.Int).SetString(s, 16)
	return ok
}

// runCARootCRL signs the root's CRL at the root ceremony. The root signs
// only intermediates, so its CRL lists the intermediates it withdrew — most
// often none. Relying parties that check every level of a chain (OpenSSL's
// CRL_CHECK_ALL, nginx's ssl_crl) need it next to the intermediate's CRL,
// which the server publishes itself.
func runCARootCRL(_ context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "ca root-crl")
	dataDir := fs.String("data-dir", envOr(env, "MICA_DATA_DIR", "mica-data"), "root data directory (holds ca/root.pem and ca/root.key)")
	out := fs.String("out", "", "where to write the DER CRL (default ca/root.crl in the data directory, which `mica serve` publishes)")
	validity := duration.Duration(180 * 24 * time.Hour)
	fs.Var(&validity, "validity", "time until nextUpdate, e.g. 90d: sign the next one before then")
	passFile := fs.String("passphrase-file", "", "file holding the root key passphrase (or set MICA_PASSPHRASE)")
	kf := addKeyFlags(fs)
	previous := fs.Bool("previous", false, "sign the CRL of the root a rollover replaced (previous-root.*), while it is still in the bundle")
	var revoked revokedList
	fs.Var(&revoked, "revoke", "an intermediate's serial to list, as SERIAL or SERIAL:reason (repeatable; e.g. 1f2e…:cACompromise)")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if validity.D() < time.Hour || validity.D() > 366*24*time.Hour {
		return usageError("--validity %s: choose between 1h and 366d", validity)
	}
	d := dataPaths{*dataDir}
	load := ca.LoadRootKeys
	if *previous {
		load = ca.LoadPreviousRootKeys
	}
	root, rootKey, closeKeys, err := loadRootKeyWith(env, d, *passFile, kf, load)
	if err != nil {
		return err
	}
	defer closeKeys()
	path := *out
	if path == "" {
		path = filepath.Join(d.caDir(), RootCRLFile)
		if *previous {
			path = filepath.Join(d.caDir(), rootCRLFileOf(root))
		}
	}
	// The root machine keeps no counter: the number is the time, and it
	// always passes the CRL it replaces, so each new root CRL supersedes
	// the last even when two are signed within a second.
	prev, err := previousRootCRL(path, root)
	if err != nil {
		return err
	}
	now := time.Now().UTC().Truncate(time.Second)
	number := big.NewInt(now.Unix())
	if prev != nil && number.Cmp(prev) <= 0 {
		number = new(big.Int).Add(prev, big.NewInt(1))
	}
	der, err := crl.Build(crl.Params{
		Issuer: root, Signer: issuance.NewCRLSigner(root, rootKey), Number: number,
		ThisUpdate: now, NextUpdate: now.Add(validity.D()), Entries: len(revoked),
	}, slices.Values(revoked))
	if err != nil {
		return err
	}
	if err := issuance.LintCRL(der); err != nil {
		return fmt.Errorf("the root CRL fails lint, nothing written: %w", err)
	}
	if err := atomicfile.Write(path, der, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "wrote %s: root CRL listing %d intermediate(s), next update %s\n",
		path, len(revoked), now.Add(validity.D()).Format(time.RFC3339))
	fmt.Fprintf(env.stdout, "copy it to the server's ca/%s (ca/%s for the data directory's own root); `mica serve` publishes it at %s on its plain-HTTP listener\n",
		rootCRLFileOf(root), RootCRLFile, crl.Path(root))
	return nil
}

// previousRootCRL reads the CRL a new one would replace at path: its
// number, or nil when there is none. Only a CRL this root signed is
// replaced; anything else at path is left alone.
func previousRootCRL(path string, root *x509.Certificate) (*big.Int, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	old, err := x509.ParseRevocationList(data)
	if err != nil || old.CheckSignatureFrom(root) != nil {
		return nil, fmt.Errorf("%s exists and is not a CRL of this root: move it away, or choose another --out", path)
	}
	return old.Number, nil
}
