package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mica-pki/mica/credential"
	"github.com/mica-pki/mica/internal/atomicfile"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/ca"
	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/keys/custody"
)

// The offline-root flow:
//   root machine:  mica init --root-only
//   server:        mica ca request-intermediate   → ca/intermediate.csr
//   root machine:  mica ca sign-intermediate --csr intermediate.csr --out intermediate.pem
//   server:        mica ca import-intermediate --cert intermediate.pem --root root.pem
//   server:        mica init                      (token key, config, first admin)
//
// Rotating with an offline root (the server cannot sign its next
// intermediate itself):
//   server:        mica ca request-intermediate --next   → ca/next-intermediate.csr
//   root machine:  mica ca sign-intermediate --csr next-intermediate.csr --out next.pem
//   server:        mica ca import-intermediate --next --cert next.pem   (prepared; activates after propagation)
// and rolling the root over:
//   root machine:  mica ca new-root               → ca/root.pem (new), root-cross-*.pem
//   server:        mica ca import-root --root root.pem --cross-from-previous … --cross-to-previous …
//   then the next intermediate as above, signed by the new root.

func runCARequestIntermediate(_ context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "ca request-intermediate")
	dataDir := fs.String("data-dir", envOr(env, "MICA_DATA_DIR", "mica-data"), "server data directory")
	td := fs.String("trust-domain", "example.org", "SPIFFE trust domain")
	keyType := fs.String("key-type", string(keys.Default), "intermediate key algorithm")
	passFile := fs.String("passphrase-file", "", "file holding the passphrase that encrypts the intermediate key (or set MICA_PASSPHRASE)")
	kf := addKeyFlags(fs)
	next := fs.Bool("next", false, "for a server that already serves: the next intermediate of a rotation (ca/next-intermediate.*)")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	d := dataPaths{*dataDir}
	s, err := kf.settings()
	if err != nil {
		return err
	}
	pass, err := readPassphrase(env, *passFile, d)
	if err != nil && s.Backend != custody.PKCS11 {
		return err
	}
	cfg, err := initOptions{trustDomain: *td, keyType: *keyType, passphrase: pass}.caConfig()
	if err != nil {
		return err
	}
	if cfg.Keys, err = openKeys(env, s, pass); err != nil {
		return err
	}
	defer cfg.Keys.Close()
	if err := os.MkdirAll(d.caDir(), 0o700); err != nil {
		return err
	}
	if *next {
		if _, err := ca.RequestNextIntermediate(d.caDir(), cfg); err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "wrote %s: sign it on the root machine with `mica ca sign-intermediate --csr next-intermediate.csr --out next.pem`, then `mica ca import-intermediate --next --cert next.pem` here\n",
			filepath.Join(d.caDir(), ca.NextIntermediateCSRFile))
		return nil
	}
	if _, err := ca.RequestIntermediate(d.caDir(), cfg); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "wrote %s: sign it on the root machine with `mica ca sign-intermediate --csr intermediate.csr --out intermediate.pem`\n",
		filepath.Join(d.caDir(), ca.IntermediateCSRFile))
	return nil
}

func runCASignIntermediate(_ context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "ca sign-intermediate")
	dataDir := fs.String("data-dir", envOr(env, "MICA_DATA_DIR", "mica-data"), "root data directory (from `mica init --root-only`)")
	csrPath := fs.String("csr", "", "the intermediate's CSR")
	out := fs.String("out", "", "where to write the signed intermediate certificate")
	td := fs.String("trust-domain", "example.org", "the only SPIFFE trust domain the intermediate may sign for (name constraint)")
	var validity duration.Duration
	fs.Var(&validity, "validity", "intermediate lifetime, e.g. 365d (default 1 year)")
	passFile := fs.String("passphrase-file", "", "file holding the root key passphrase (or set MICA_PASSPHRASE)")
	kf := addKeyFlags(fs)
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if *csrPath == "" || *out == "" {
		return usageError("ca sign-intermediate needs --csr and --out")
	}
	trustDomain, err := spiffeid.TrustDomainFromString(*td)
	if err != nil {
		return usageError("--trust-domain %q: %v", *td, err)
	}
	d := dataPaths{*dataDir}
	root, rootKey, closeKeys, err := loadRootKey(env, d, *passFile, kf)
	if err != nil {
		return err
	}
	defer closeKeys()
	data, err := os.ReadFile(*csrPath)
	if err != nil {
		return fmt.Errorf("reading CSR: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return fmt.Errorf("%s holds no PEM certificate request", *csrPath)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return fmt.Errorf("parsing %s: %w", *csrPath, err)
	}
	inter, err := ca.SignIntermediate(root, rootKey, csr, ca.IntermediateConfig{TrustDomain: trustDomain, Validity: validity.D()})
	if err != nil {
		return err
	}
	if err := atomicfile.Create(*out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: inter.Raw}), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "signed intermediate %q (sha256 %s), valid until %s; wrote %s\n",
		inter.Subject.CommonName, authority.Fingerprint(inter.Raw), inter.NotAfter.Format(time.RFC3339), *out)
	fmt.Fprintf(env.stdout, "copy it and %s to the server and run `mica ca import-intermediate --cert %s --root root.pem`\n",
		filepath.Join(d.caDir(), ca.RootCertFile), filepath.Base(*out))
	return nil
}

func runCAImportIntermediate(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "ca import-intermediate")
	dataDir := fs.String("data-dir", envOr(env, "MICA_DATA_DIR", "mica-data"), "server data directory")
	certPath := fs.String("cert", "", "the signed intermediate certificate")
	rootPath := fs.String("root", "", "the root certificate (copied into the data directory if it is not there yet)")
	next := fs.Bool("next", false, "the next intermediate of a rotation, requested with --next: recorded as the prepared CA slot")
	configPath := fs.String("config", "", "config file, for --next (default: mica.yaml in the data directory)")
	db := fs.String("db", env.getenv("MICA_DB"), "postgres:// URL, for --next (env MICA_DB; default: the config's)")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if *certPath == "" {
		return usageError("ca import-intermediate needs --cert")
	}
	d := dataPaths{*dataDir}
	if *next {
		return importNextIntermediate(ctx, env, d, *configPath, *db, *certPath)
	}
	if !fileExists(d.rootCert()) {
		if *rootPath == "" {
			return usageError("%s is missing: pass --root root.pem from the root machine", d.rootCert())
		}
		rootPEM, err := os.ReadFile(*rootPath)
		if err != nil {
			return fmt.Errorf("reading root: %w", err)
		}
		if _, err := credential.ParseCertificates(rootPEM); err != nil {
			return fmt.Errorf("%s: %w", *rootPath, err)
		}
		if err := atomicfile.Create(d.rootCert(), rootPEM, 0o644); err != nil {
			return err
		}
	}
	data, err := os.ReadFile(*certPath)
	if err != nil {
		return fmt.Errorf("reading intermediate: %w", err)
	}
	inter, err := ca.ImportIntermediate(d.caDir(), data)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "imported intermediate %q; finish with `mica init --data-dir %s` (keeps this CA), then `mica serve`\n",
		inter.Subject.CommonName, d.dir)
	return nil
}

// loadRootKey reads the root certificate and opens its key (decrypted, or
// in its PKCS#11 token): only on the root machine, for the ceremonies
// (signing an intermediate or the root CRL).
func loadRootKey(env *cliEnv, d dataPaths, passFile string, kf keyFlags) (*x509.Certificate, crypto.Signer, func(), error) {
	return loadRootKeyWith(env, d, passFile, kf, ca.LoadRootKeys)
}

func loadRootKeyWith(env *cliEnv, d dataPaths, passFile string, kf keyFlags,
	load func(string, custody.Keys) (*x509.Certificate, crypto.Signer, error)) (*x509.Certificate, crypto.Signer, func(), error) {
	s, err := kf.settings()
	if err != nil {
		return nil, nil, nil, err
	}
	pass, err := readPassphrase(env, passFile, d)
	if err != nil && s.Backend != custody.PKCS11 {
		return nil, nil, nil, err
	}
	k, err := openKeys(env, s, pass)
	if err != nil {
		return nil, nil, nil, err
	}
	root, key, err := load(d.caDir(), k)
	if err != nil {
		k.Close()
		return nil, nil, nil, err
	}
	return root, key, func() { k.Close() }, nil
}
