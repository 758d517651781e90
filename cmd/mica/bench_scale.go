package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/bench"
	"github.com/mica-pki/mica/internal/ca"
	"github.com/mica-pki/mica/internal/keys"
)

// runBenchScale measures mica with a large inventory: it loads the fleet
// into a data directory (or reuses one loaded before), starts `mica serve`
// on it as a process of its own and measures what operators run.
func runBenchScale(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "bench scale")
	live := fs.Int("live", 1_000_000, "live certificates to load")
	revoked := fs.Int("revoked", 100_000, "revoked certificates to load on top")
	dataDir := fs.String("data-dir", "", "data directory to load into, or to reuse when already loaded (default: a temporary one, removed after)")
	db := fs.String("db", "", "postgres:// URL of an empty database (default: SQLite in the data directory)")
	checkpointEvery := fs.Int("checkpoint-every", 1000, "sign an audit checkpoint every this many leaves while loading")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if *live < 1 || *revoked < 0 || *checkpointEvery < 1 {
		return usageError("--live and --checkpoint-every must be at least 1, --revoked not negative")
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	dir := *dataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "mica-bench-scale-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	d := dataPaths{dir}
	if !fileExists(d.rootCert()) {
		pass, err := newDevPassphrase(d)
		if err != nil {
			return err
		}
		if err := initDataDir(ctx, &cliEnv{stdout: io.Discard, stderr: io.Discard, getenv: env.getenv}, initOptions{data: d,
			trustDomain: "example.org", keyType: string(keys.Default), passphrase: pass, adminName: "bench", dbURL: *db}); err != nil {
			return err
		}
	}
	cfg, err := loadConfig(d.config())
	if err != nil {
		return err
	}
	pass, err := readPassphrase(env, "", d)
	if err != nil {
		return err
	}
	p, err := openParts(ctx, d, cfg, pass, openOptions{dbURL: *db})
	if err != nil {
		return err
	}
	defer p.Close()
	// The fleet is signed by the data directory's intermediate, as the
	// server would sign it: its key from the CA's key custody.
	interRef, err := ca.KeyRef(d.caDir(), ca.IntermediateKeyFile)
	if err != nil {
		return err
	}
	interKey, err := p.caKeys.Open(interRef)
	if err != nil {
		return fmt.Errorf("bench: open the intermediate's key: %w", err)
	}
	admin, err := tls.LoadX509KeyPair(filepath.Join(d.adminDir(), fullchainFile), filepath.Join(d.adminDir(), keyFile))
	if err != nil {
		return err
	}
	roots, err := loadPool(d.rootCert())
	if err != nil {
		return err
	}
	dbArgs := func(args []string) []string {
		if *db != "" {
			return append(args, "--db", *db)
		}
		return args
	}
	engine := "sqlite"
	if isPostgres(*db) || isPostgres(cfg.Database) {
		engine = "postgres"
	}
	res, err := bench.Scale(ctx, bench.ScaleConfig{
		Engine: engine,
		Store:  p.store,
		Load: bench.LoadConfig{Live: *live, Revoked: *revoked, Issuer: p.hierarchy.Intermediate, Signer: interKey,
			IssuerID: authority.Fingerprint(p.hierarchy.Intermediate.Raw), TrustDomain: cfg.TrustDomain,
			Checkpoint: p.audit.RunOnce, CheckpointEvery: *checkpointEvery,
			Progress: func(n int) {
				if n%100_000 == 0 {
					fmt.Fprintf(env.stderr, "bench: %d certificates written\n", n)
				}
			}},
		Server: func(ctx context.Context) *exec.Cmd {
			return exec.CommandContext(ctx, exe, dbArgs([]string{"serve", "--data-dir", dir,
				"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"})...)
		},
		CLI: func(ctx context.Context, url string, args ...string) *exec.Cmd {
			return exec.CommandContext(ctx, exe, append(args, "--server", url, "--data-dir", dir)...)
		},
		Client: func(url string) (*client.Client, error) {
			return client.New(client.Config{Server: url, Roots: roots, Certificate: &admin, Timeout: time.Minute})
		},
		Roots: roots, Admin: admin, Log: env.stderr,
	})
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	res.WriteText(env.stdout)
	return nil
}
