package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
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
	db := fs.String("db", env.getenv("MICA_DB"), "postgres:// URL, recorded in mica.yaml (env MICA_DB; default: SQLite in the data directory)")
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
// one was imported, token key, config, store, and the first admin
// credential. The database is recorded in the config, and bound to this
// CA; if it is refused (another CA's), what this run created is removed.
func initDataDir(ctx context.Context, env *cliEnv, o initOptions) (err error) {
	var made []string // what this run created, removed if it fails
	defer func() {
		if err != nil {
			for i := len(made) - 1; i >= 0; i-- {
				os.RemoveAll(made[i])
			}
		}
	}()
	if !fileExists(o.data.dir) {
		made = append(made, o.data.dir)
	}
	if err := os.MkdirAll(o.data.dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", o.data.dir, err)
	}
	caCfg, err := o.caConfig()
	if err != nil {
		return err
	}
	caKeys, err := openKeys(env, o.keys, o.passphrase)
	if err != nil {
		return err
	}
	caCfg.Keys = caKeys
	defer caKeys.Close()
	hier, err := ca.LoadKeys(o.data.caDir(), caKeys)
	createdCA := false
	switch {
	case errors.Is(err, ca.ErrNotInitialized):
		if !fileExists(o.data.caDir()) {
			made = append(made, o.data.caDir())
		}
		if hier, err = ca.Init(o.data.caDir(), caCfg); err != nil {
			return err
		}
		createdCA = true
	case err != nil:
		return err
	case fileExists(o.data.adminDir()):
		return fmt.Errorf("%s is already initialised: serve it with `mica serve --data-dir %s`", o.data.dir, o.data.dir)
	}
	serverKeys := []string{o.data.tokenKey()}
	if o.keys.Backend != custody.PKCS11 {
		// With a token, the first openParts makes the audit key in it.
		serverKeys = append(serverKeys, o.data.auditKey())
	}
	for _, path := range serverKeys {
		_, created, err := file.LoadOrCreate(path, o.passphrase, keys.Ed25519)
		if err != nil {
			return err
		}
		if created {
			made = append(made, path)
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
		if err := atomicfile.Create(o.data.config(), []byte(defaultConfig(trustDomain, adminID, withoutPassword(o.dbURL))+settingsYAML(o.keys)), 0o644); err != nil {
			return err
		}
		made = append(made, o.data.config())
		if o.dbURL != withoutPassword(o.dbURL) {
			fmt.Fprintf(env.stdout, "the database password is not written to %s: give it to mica with PGPASSWORD or ~/.pgpass (or --db)\n", o.data.config())
		}
	}
	cfg, err := loadConfig(o.data.config())
	if err != nil {
		return err
	}
	// A config written earlier must already name the database: otherwise
	// a later `mica serve` without --db would open another one.
	if o.dbURL != "" && withoutPassword(o.dbURL) != withoutPassword(cfg.Database) {
		return usageError("%s names the database %s but --db says %s: set database: in it to the database this CA lives in, and run init without --db",
			o.data.config(), orSQLite(cfg.Database), redactURL(o.dbURL))
	}
	p, err := openParts(ctx, o.data, cfg, o.passphrase, openOptions{dbURL: o.dbURL, create: true})
	if err != nil {
		return err
	}
	defer p.Close()
	made = nil // the database now belongs to this CA: keep what it names
	if createdCA {
		detail := fmt.Sprintf("root %s, intermediate %s", authority.Fingerprint(hier.Root.Raw), authority.Fingerprint(hier.Intermediate.Raw))
		if err := p.authority.RecordSystemEvent(ctx, store.ActionCACreated, detail); err != nil {
			return err
		}
	}
	if err := issueAdminCredential(ctx, p, adminID, o.data.adminDir()); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "initialised %s: trust domain %s, root sha256 %s, store %s\n", o.data.dir, cfg.TrustDomain,
		authority.Fingerprint(hier.Root.Raw), orSQLite(cfg.Database))
	fmt.Fprintf(env.stdout, "admin credential for %s in %s (keep it safe); config in %s\n", adminID, o.data.adminDir(), o.data.config())
	return nil
}

// withoutPassword is a database URL with any password taken out, as it is
// written to mica.yaml (which is meant for version control).
func withoutPassword(dbURL string) string {
	u, err := url.Parse(dbURL)
	if err != nil || u.User == nil {
		return dbURL
	}
	if _, ok := u.User.Password(); !ok {
		return dbURL
	}
	u.User = url.User(u.User.Username())
	return u.String()
}

// orSQLite names a configured database for people.
func orSQLite(dbURL string) string {
	if dbURL == "" {
		return "SQLite in the data directory"
	}
	return redactURL(dbURL)
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
