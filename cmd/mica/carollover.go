package main

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"time"

	"github.com/mica-pki/mica/credential"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/ca"
	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/keys/custody"
	"github.com/mica-pki/mica/internal/rotation"
	"github.com/mica-pki/mica/internal/store"
)

// openCAStore opens the database of a data directory for the CA commands
// that record slots directly (the offline-root ceremony's imports).
func openCAStore(ctx context.Context, d dataPaths, configPath, db string) (store.Store, error) {
	if configPath == "" {
		configPath = d.config()
	}
	cfg, err := loadConfig(configPath)
	if err != nil {
		return nil, err
	}
	if db == "" {
		db = cfg.Database
	}
	return openStore(ctx, db, d)
}

// operator names who ran a CA command on the server, for the audit log.
func operator() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	return "operator:" + name
}

func importNextIntermediate(ctx context.Context, env *cliEnv, d dataPaths, configPath, db, certPath string) error {
	data, err := os.ReadFile(certPath)
	if err != nil {
		return fmt.Errorf("reading the intermediate: %w", err)
	}
	cert, ref, err := ca.NextIntermediate(d.caDir(), data)
	if err != nil {
		return err
	}
	st, err := openCAStore(ctx, d, configPath, db)
	if err != nil {
		return err
	}
	defer st.Close()
	id, err := rotation.ImportIntermediate(ctx, st, cert, ref, operator(), time.Now())
	if err != nil {
		return err
	}
	if err := ca.DonePending(d.caDir()); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "intermediate %d %q is prepared and published (sha256 %s): it activates once its propagation is over (`mica ca status`)\n",
		id, cert.Subject.CommonName, authority.Fingerprint(cert.Raw))
	return nil
}

// runCANewRoot rolls the root over at the offline-root ceremony.
func runCANewRoot(_ context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "ca new-root")
	dataDir := fs.String("data-dir", envOr(env, "MICA_DATA_DIR", "mica-data"), "root data directory (from `mica init --root-only`)")
	td := fs.String("trust-domain", "example.org", "SPIFFE trust domain, for the new root's name")
	passFile := fs.String("passphrase-file", "", "file holding the root key passphrase (or set MICA_PASSPHRASE)")
	var validity duration.Duration
	fs.Var(&validity, "validity", "the new root's lifetime, like 3650d (default ten years)")
	kf := addKeyFlags(fs)
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
	cfg, err := initOptions{trustDomain: *td, passphrase: pass}.caConfig()
	if err != nil {
		return err
	}
	if cfg.Keys, err = openKeys(env, s, pass); err != nil {
		return err
	}
	defer cfg.Keys.Close()
	r, err := ca.RollRoot(d.caDir(), cfg, validity.D())
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "new root %q (sha256 %s), valid until %s, cross-signed both ways with %q\n",
		r.Root.Subject.CommonName, authority.Fingerprint(r.Root.Raw), r.Root.NotAfter.Format(time.RFC3339), r.Previous.Subject.CommonName)
	fmt.Fprintf(env.stdout, "copy %s, %s and %s to the server and run `mica ca import-root --root root.pem --cross-from-previous %s --cross-to-previous %s`\n",
		filepath.Join(d.caDir(), ca.RootCertFile), filepath.Join(d.caDir(), ca.CrossFromPreviousFile), filepath.Join(d.caDir(), ca.CrossToPreviousFile),
		ca.CrossFromPreviousFile, ca.CrossToPreviousFile)
	return nil
}

// runCAImportRoot records a root made at the ceremony as the prepared root.
func runCAImportRoot(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "ca import-root")
	dataDir := fs.String("data-dir", envOr(env, "MICA_DATA_DIR", "mica-data"), "server data directory")
	configPath := fs.String("config", "", "config file (default: mica.yaml in the data directory)")
	db := fs.String("db", env.getenv("MICA_DB"), "postgres:// URL (env MICA_DB; default: the config's)")
	rootPath := fs.String("root", "", "the new root (root.pem from the root machine)")
	fromPath := fs.String("cross-from-previous", "", "the new root certified by the previous root (root-cross-from-previous.pem)")
	toPath := fs.String("cross-to-previous", "", "the previous root certified by the new root (root-cross-to-previous.pem)")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if *rootPath == "" || *fromPath == "" || *toPath == "" {
		return usageError("ca import-root needs --root, --cross-from-previous and --cross-to-previous")
	}
	var certs [3][]byte
	for i, p := range []string{*rootPath, *fromPath, *toPath} {
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		certs[i] = data
	}
	root, err := credential.ParseCertificates(certs[0])
	if err != nil {
		return fmt.Errorf("%s: %w", *rootPath, err)
	}
	from, err := credential.ParseCertificates(certs[1])
	if err != nil {
		return fmt.Errorf("%s: %w", *fromPath, err)
	}
	to, err := credential.ParseCertificates(certs[2])
	if err != nil {
		return fmt.Errorf("%s: %w", *toPath, err)
	}
	d := dataPaths{*dataDir}
	st, err := openCAStore(ctx, d, *configPath, *db)
	if err != nil {
		return err
	}
	defer st.Close()
	id, err := rotation.ImportRoot(ctx, st, root[0], from[0], to[0], operator(), time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "root %d %q is prepared and published in the bundle; next: `mica ca request-intermediate --next`, signed on the root machine by the new root\n",
		id, root[0].Subject.CommonName)
	return nil
}
