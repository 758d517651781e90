package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/api"
	"github.com/mica-pki/mica/internal/atomicfile"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/ca"
	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/keys/custody"
	"github.com/mica-pki/mica/internal/keys/file"
	"github.com/mica-pki/mica/internal/store"
)

// initOptions are what `mica init` (and `serve --dev`) set up.
type initOptions struct {
	data        dataPaths
	trustDomain string
	keyType     string
	passphrase  []byte
	adminName   string
	dbURL       string
	// keys is where the CA keys are made (mica.yaml's key_backend).
	keys custody.Settings
	// rootValidity and interValidity are the first CA's lifetimes; zero
	// means the defaults.
	rootValidity, interValidity time.Duration
}

func runInit(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "init")
	dataDir := fs.String("data-dir", envOr(env, "MICA_DATA_DIR", "mica-data"), "data directory to create (env MICA_DATA_DIR)")
	td := fs.String("trust-domain", "example.org", "SPIFFE trust domain of this CA")
	keyType := fs.String("key-type", string(keys.Default), "CA key algorithm: ecdsa-p256, ecdsa-p384, ed25519, rsa-3072")
	passFile := fs.String("passphrase-file", "", "file holding the passphrase that encrypts the CA keys (or set MICA_PASSPHRASE)")
	rootOnly := fs.Bool("root-only", false, "create only a root, for an offline root machine; sign intermediates with `mica ca sign-intermediate`")
	adminName := fs.String("admin-name", "admin", "name of the first admin: spiffe://<trust domain>/mica/admin/<name>")
	db := fs.String("db", "", "postgres:// URL (default: SQLite in the data directory)")
	kf := addKeyFlags(fs)
	var rootValidity, interValidity duration.Duration
	fs.Var(&rootValidity, "root-validity", "the root's lifetime, like 3650d (default ten years)")
	fs.Var(&interValidity, "intermediate-validity", "the first intermediate's lifetime, like 365d (default one year; later ones: mica.yaml's ca.intermediate_lifetime)")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	keySettings, err := kf.settings()
	if err != nil {
		return err
	}
	d := dataPaths{*dataDir}
	if *passFile == "" && env.getenv(passphraseEnv) == "" {
		return usageError("init encrypts the CA keys: pass --passphrase-file FILE or set MICA_PASSPHRASE")
	}
	pass, err := readPassphrase(env, *passFile, d)
	if err != nil {
		return err
	}
	opts := initOptions{data: d, trustDomain: *td, keyType: *keyType, passphrase: pass, adminName: *adminName, dbURL: *db, keys: keySettings,
		rootValidity: rootValidity.D(), interValidity: interValidity.D()}
	if *rootOnly {
		return initRootOnly(env, opts)
	}
	return initDataDir(ctx, env, opts)
}

func (o initOptions) caConfig() (ca.InitConfig, error) {
	td, err := spiffeid.TrustDomainFromString(o.trustDomain)
	if err != nil {
		return ca.InitConfig{}, usageError("--trust-domain %q: %v", o.trustDomain, err)
	}
	alg, err := keys.ParseAlgorithm(o.keyType)
	if err != nil {
		return ca.InitConfig{}, usageError("%v", err)
	}
	return ca.InitConfig{TrustDomain: td, Algorithm: alg, Passphrase: o.passphrase, RootValidity: o.rootValidity, IntermediateValidity: o.interValidity}, nil
}

func initRootOnly(env *cliEnv, o initOptions) error {
	cfg, err := o.caConfig()
	if err != nil {
		return err
	}
	if cfg.Keys, err = openKeys(env, o.keys, o.passphrase); err != nil {
		return err
	}
	defer cfg.Keys.Close()
	if err := os.MkdirAll(o.data.caDir(), 0o700); err != nil {
		return err
	}
	root, err := ca.InitRootOnly(o.data.caDir(), cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "created offline root %q in %s (sha256 %s)\n", root.Subject.CommonName, o.data.caDir(), authority.Fingerprint(root.Raw))
	fmt.Fprintf(env.stdout, "next: on the server run `mica ca request-intermediate`, bring its CSR here and run `mica ca sign-intermediate --data-dir %s --csr intermediate.csr --out intermediate.pem`\n", o.data.dir)
	return nil
}

// initDataDir creates (or completes) a data directory: CA hierarchy unless
// one was imported, token key, config, store, and the first admin credential.
func initDataDir(ctx context.Context, env *cliEnv, o initOptions) error {
	if err := os.MkdirAll(o.data.dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", o.data.dir, err)
	}
	caCfg, err := o.caConfig()
	if err != nil {
		return err
	}
	keys, err := openKeys(env, o.keys, o.passphrase)
	if err != nil {
		return err
	}
	caCfg.Keys = keys
	defer keys.Close()
	hier, err := ca.LoadKeys(o.data.caDir(), keys)
	createdCA := false
	switch {
	case errors.Is(err, ca.ErrNotInitialized):
		if hier, err = ca.Init(o.data.caDir(), caCfg); err != nil {
			return err
		}
		createdCA = true
	case err != nil:
		return err
	case fileExists(o.data.adminDir()):
		return fmt.Errorf("%s is already initialised: serve it with `mica serve --data-dir %s`", o.data.dir, o.data.dir)
	}
	if !fileExists(o.data.tokenKey()) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		if err := file.Write(o.data.tokenKey(), priv, o.passphrase); err != nil {
			return err
		}
	}
	if o.keys.Backend != custody.PKCS11 {
		// With a token, the first openParts makes the key in it.
		if _, err := ensureAuditKey(o.data, o.passphrase); err != nil {
			return err
		}
	}
	// An imported intermediate (offline root) names its trust domain in its
	// name constraints; that wins over the flag.
	trustDomain := caCfg.TrustDomain.Name()
	if uris := hier.Intermediate.PermittedURIDomains; len(uris) == 1 {
		trustDomain = uris[0]
	}
	adminID := fmt.Sprintf("spiffe://%s%s%s", trustDomain, authority.AdminPathPrefix, o.adminName)
	if !fileExists(o.data.config()) {
		if err := atomicfile.Create(o.data.config(), []byte(defaultConfig(trustDomain, adminID)+settingsYAML(o.keys)), 0o644); err != nil {
			return err
		}
	}
	cfg, err := loadConfig(o.data.config())
	if err != nil {
		return err
	}
	p, err := openParts(ctx, o.data, cfg, o.passphrase, o.dbURL, nil)
	if err != nil {
		return err
	}
	defer p.Close()
	if createdCA {
		detail := fmt.Sprintf("root %s, intermediate %s", authority.Fingerprint(hier.Root.Raw), authority.Fingerprint(hier.Intermediate.Raw))
		if err := p.authority.RecordSystemEvent(ctx, store.ActionCACreated, detail); err != nil {
			return err
		}
	}
	if err := issueAdminCredential(ctx, p, adminID, o.data.adminDir()); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "initialised %s: trust domain %s, root sha256 %s\n", o.data.dir, cfg.TrustDomain, authority.Fingerprint(hier.Root.Raw))
	fmt.Fprintf(env.stdout, "admin credential for %s in %s (keep it safe); config in %s\n", adminID, o.data.adminDir(), o.data.config())
	return nil
}

func issueAdminCredential(ctx context.Context, p *parts, adminID, dir string) error {
	id, err := identity.Parse(adminID)
	if err != nil {
		return err
	}
	key, err := keys.Generate(keys.Default, rand.Reader)
	if err != nil {
		return err
	}
	iss, err := p.authority.IssueInternal(ctx, authority.ProfileAdmin, id, key.Public(), 0)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	resp := issuedToResponse(iss)
	return writeCredential(dir, key, &resp)
}

// issuedToResponse shapes an in-process issuance like the API's answer, so
// the same file writer serves both.
func issuedToResponse(iss *authority.Issued) client.CertificateResponse {
	return api.IssuedResponse(iss)
}

// newDevPassphrase makes and stores a random passphrase for a --dev data
// directory. It is for a first try on one machine only.
func newDevPassphrase(d dataPaths) ([]byte, error) {
	if err := os.MkdirAll(d.dir, 0o700); err != nil {
		return nil, err
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	pass := []byte(hex.EncodeToString(b[:]))
	if err := atomicfile.Create(d.passphrase(), append(pass, '\n'), 0o600); err != nil {
		return nil, err
	}
	return pass, nil
}
