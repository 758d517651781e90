package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/mica-pki/mica/client"
)

// clientFlags are the flags every command that talks to a server shares.
type clientFlags struct {
	server  string
	caFile  string
	cert    string
	key     string
	dataDir string
}

func (cf *clientFlags) register(fs *flag.FlagSet, env *cliEnv, withCreds bool) {
	fs.StringVar(&cf.server, "server", envOr(env, "MICA_SERVER", "https://"+defaultListen), "server URL (env MICA_SERVER)")
	fs.StringVar(&cf.caFile, "ca-file", env.getenv("MICA_CA_FILE"), "root certificate(s) to trust the server with (env MICA_CA_FILE; default: the data directory's root)")
	fs.StringVar(&cf.dataDir, "data-dir", envOr(env, "MICA_DATA_DIR", "mica-data"), "data directory, for default credentials (env MICA_DATA_DIR)")
	if withCreds {
		fs.StringVar(&cf.cert, "cert", env.getenv("MICA_CERT"), "client certificate (default: the data directory's admin credential)")
		fs.StringVar(&cf.key, "key", env.getenv("MICA_KEY"), "client key (default: the data directory's admin credential)")
	}
}

func envOr(env *cliEnv, name, def string) string {
	if v := env.getenv(name); v != "" {
		return v
	}
	return def
}

// roots loads the trust anchors: --ca-file, else the data directory's root.
func (cf *clientFlags) roots() (*x509.CertPool, error) {
	path := cf.caFile
	if path == "" {
		path = dataPaths{cf.dataDir}.rootCert()
		if !fileExists(path) {
			return nil, fmt.Errorf("no root certificate to trust the server with: pass --ca-file root.pem (or --data-dir of an initialised server)")
		}
	}
	return loadPool(path)
}

func loadPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading trust anchors: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// credential loads --cert/--key, defaulting to the admin credential that
// `mica init` wrote in the data directory.
func (cf *clientFlags) credential() (*tls.Certificate, error) {
	cert, key := cf.cert, cf.key
	if cert == "" && key == "" {
		dir := dataPaths{cf.dataDir}.adminDir()
		cert, key = filepath.Join(dir, "fullchain.pem"), filepath.Join(dir, "key.pem")
		if !fileExists(cert) {
			return nil, fmt.Errorf("no client credential: pass --cert and --key (an admin's, or the holder's), or --data-dir of an initialised server")
		}
	}
	if cert == "" || key == "" {
		return nil, usageError("pass both --cert and --key")
	}
	c, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("loading client credential %s: %w", cert, err)
	}
	return &c, nil
}

func (cf *clientFlags) client(withCreds bool) (*client.Client, error) {
	roots, err := cf.roots()
	if err != nil {
		return nil, err
	}
	cfg := client.Config{Server: cf.server, Roots: roots}
	if withCreds {
		if cfg.Certificate, err = cf.credential(); err != nil {
			return nil, err
		}
	}
	return client.New(cfg)
}

// apiFlags starts the flags of a command that calls the API with a
// credential: the shared client flags, to which the command adds its own.
func apiFlags(env *cliEnv, name string) (*flag.FlagSet, *clientFlags) {
	fs := newFlags(env, name)
	cf := &clientFlags{}
	cf.register(fs, env, true)
	return fs, cf
}

// connect parses the command's arguments and makes its API client.
func (cf *clientFlags) connect(env *cliEnv, fs *flag.FlagSet, args []string) (*client.Client, error) {
	if err := parse(env, fs, args); err != nil {
		return nil, err
	}
	return cf.client(true)
}
