package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.yaml.in/yaml/v3"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/agent"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/token"
	"github.com/mica-pki/mica/internal/workloadapi"
)

// agentConfig is the agent's YAML config file; flags override it.
type agentConfig struct {
	Server    string `yaml:"server"`
	CAFile    string `yaml:"ca_file"`
	TokenFile string `yaml:"token_file"`
	Out       string `yaml:"out"`
	Files     struct {
		Key       string `yaml:"key"`
		Cert      string `yaml:"cert"`
		Chain     string `yaml:"chain"`
		Fullchain string `yaml:"fullchain"`
		Bundle    string `yaml:"bundle"`
	} `yaml:"files"`
	Owner          string      `yaml:"owner"` // uid[:gid]
	KeyType        string      `yaml:"key_type"`
	TTL            string      `yaml:"ttl"`
	Socket         string      `yaml:"socket"`
	Metrics        string      `yaml:"metrics"`
	BundleInterval string      `yaml:"bundle_interval"`
	Reload         agentReload `yaml:"reload"`
}

// agentReload says how to make a service load rotated files.
type agentReload struct {
	Command []string `yaml:"command"` // run without a shell
	PIDFile string   `yaml:"pid_file"`
	Signal  string   `yaml:"signal"` // for PIDFile; default HUP
}

const (
	defaultAgentSocket  = "/run/mica/agent.sock"
	defaultAgentMetrics = "127.0.0.1:9124"
)

func runAgent(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "agent")
	configPath := fs.String("config", "", "YAML config file (flags given override it)")
	var fc agentConfig
	var tok, reloadCmd string
	fs.StringVar(&fc.Server, "server", env.getenv("MICA_SERVER"), "server URL (env MICA_SERVER)")
	fs.StringVar(&fc.CAFile, "ca-file", env.getenv("MICA_CA_FILE"), "root certificate to trust the server with (default: bundle.pem in --out, else the root the token pins)")
	fs.StringVar(&tok, "token", env.getenv("MICA_TOKEN"), "one-time token for the first enrollment (env MICA_TOKEN)")
	fs.StringVar(&fc.TokenFile, "token-file", "", "read the token from this file instead")
	fs.StringVar(&fc.Out, "out", "", "directory for key.pem, cert.pem, chain.pem, fullchain.pem, bundle.pem")
	fs.StringVar(&fc.Owner, "owner", "", "uid[:gid] to own the written files (needs root)")
	fs.StringVar(&fc.KeyType, "key-type", "", "key algorithm: ecdsa-p256 (default), ecdsa-p384, ed25519, rsa-3072")
	fs.StringVar(&fc.TTL, "ttl", "", "requested lifetime (default: the profile's)")
	fs.StringVar(&fc.Socket, "socket", "", "SPIFFE Workload API unix socket (default "+defaultAgentSocket+"; \"off\" to disable)")
	fs.StringVar(&fc.Metrics, "metrics", "", "address for /metrics (default "+defaultAgentMetrics+"; \"off\" to disable)")
	fs.StringVar(&fc.BundleInterval, "bundle-interval", "", "how often to poll the trust bundles (default 5m)")
	fs.StringVar(&reloadCmd, "reload-command", "", "command run after each rotation, split on spaces (no shell)")
	fs.StringVar(&fc.Reload.PIDFile, "reload-pid-file", "", "send --reload-signal to the process in this pid file after each rotation")
	fs.StringVar(&fc.Reload.Signal, "reload-signal", "", "signal for --reload-pid-file (default HUP)")
	logFormat := fs.String("log-format", "text", "text or json")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if reloadCmd != "" {
		fc.Reload.Command = strings.Fields(reloadCmd)
	}
	cfg := fc
	if *configPath != "" {
		fileCfg, err := loadAgentConfig(*configPath)
		if err != nil {
			return err
		}
		cfg = mergeAgentConfig(fileCfg, fc)
	}
	if cfg.TokenFile != "" && tok == "" {
		b, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return fmt.Errorf("reading token: %w", err)
		}
		tok = strings.TrimSpace(string(b))
	}
	if cfg.Server == "" || cfg.Out == "" {
		return usageError("agent needs --server and --out (or a --config that sets them)")
	}
	opts, err := cfg.agentOptions()
	if err != nil {
		return usageError("%v", err)
	}
	log, err := newLogger(env, *logFormat)
	if err != nil {
		return err
	}
	roots, err := agentRoots(ctx, cfg, opts.Files, tok)
	if err != nil {
		return err
	}
	var ag *agent.Agent
	c, err := client.New(client.Config{Server: cfg.Server, Roots: roots, GetCertificate: func() (*tls.Certificate, error) { return ag.TLSCertificate() }})
	if err != nil {
		return err
	}
	defer c.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := agent.NewMetrics(reg)
	if err != nil {
		return err
	}
	opts.Server, opts.Token, opts.Logger, opts.Metrics = c, tok, log, metrics
	if ag, err = agent.New(opts); err != nil {
		return err
	}
	if err := ag.Start(ctx); err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 3)
	running := 0
	start := func(name string, f func(context.Context) error) {
		running++
		go func() {
			err := f(ctx)
			if err != nil {
				err = fmt.Errorf("%s: %w", name, err)
			}
			errc <- err
		}()
	}
	start("agent", ag.Run)
	socket := orDefault(cfg.Socket, defaultAgentSocket)
	if socket != "off" {
		wapi, err := workloadapi.New(workloadapi.Config{Snapshot: workloadSnapshot(ag), Logger: log,
			FetchJWTSVID: func(ctx context.Context, _ spiffeid.ID, aud []string) (string, error) {
				s, err := ag.FetchJWTSVID(ctx, aud)
				if err != nil {
					return "", err
				}
				return s.Token, nil
			}})
		if err != nil {
			return err
		}
		ln, err := workloadapi.Listen(socket)
		if err != nil {
			return err
		}
		defer os.Remove(socket)
		start("workload API", func(ctx context.Context) error { return wapi.Serve(ctx, ln) })
	}
	metricsAddr := orDefault(cfg.Metrics, defaultAgentMetrics)
	if metricsAddr != "off" {
		ln, err := net.Listen("tcp", metricsAddr)
		if err != nil {
			return fmt.Errorf("cannot listen for metrics on %s: %w (choose another with --metrics)", metricsAddr, err)
		}
		if host, _, _ := net.SplitHostPort(metricsAddr); host != "localhost" && !net.ParseIP(host).IsLoopback() {
			log.Warn("metrics are served beyond loopback", slog.String("address", metricsAddr))
		}
		srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 10 * time.Second}
		start("metrics", func(ctx context.Context) error {
			go func() { <-ctx.Done(); srv.Close() }()
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		metricsAddr = ln.Addr().String()
	}
	s, _ := ag.State()
	log.Info("mica agent running", slog.String("identity", s.Credential.ID), slog.String("socket", socket), slog.String("metrics", metricsAddr))
	fmt.Fprintf(env.stdout, "mica agent ready: identity %s, socket %s, metrics %s\n", s.Credential.ID, socket, metricsAddr)

	// One part stopping stops the rest.
	var first error
	for range running {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
		cancel()
	}
	return first
}

// workloadSnapshot shows the agent's state to the Workload API.
func workloadSnapshot(ag *agent.Agent) func() (workloadapi.Snapshot, <-chan struct{}) {
	return func() (workloadapi.Snapshot, <-chan struct{}) {
		s, changed := ag.State()
		snap := workloadapi.Snapshot{Roots: s.Roots, JWTBundle: s.JWTBundle}
		if s.Credential != nil {
			if id, err := spiffeid.FromString(s.Credential.ID); err == nil {
				snap.SVIDs = []workloadapi.X509SVID{{ID: id, Chain: s.Credential.Chain, Key: s.Credential.Key}}
				snap.TrustDomain = id.TrustDomain()
			}
			if len(snap.Roots) == 0 {
				snap.Roots = s.Credential.Roots
			}
		}
		if td, err := spiffeid.TrustDomainFromString(s.TrustDomain); err == nil {
			snap.TrustDomain = td
		}
		return snap, changed
	}
}

func loadAgentConfig(path string) (agentConfig, error) {
	var c agentConfig
	data, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("reading agent config: %w", err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("agent config %s: %w", path, err)
	}
	return c, nil
}

// mergeAgentConfig lets every flag that was given win over the file.
func mergeAgentConfig(file, flags agentConfig) agentConfig {
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&file.Server, flags.Server)
	set(&file.CAFile, flags.CAFile)
	set(&file.TokenFile, flags.TokenFile)
	set(&file.Out, flags.Out)
	set(&file.Owner, flags.Owner)
	set(&file.KeyType, flags.KeyType)
	set(&file.TTL, flags.TTL)
	set(&file.Socket, flags.Socket)
	set(&file.Metrics, flags.Metrics)
	set(&file.BundleInterval, flags.BundleInterval)
	set(&file.Reload.PIDFile, flags.Reload.PIDFile)
	set(&file.Reload.Signal, flags.Reload.Signal)
	if len(flags.Reload.Command) > 0 {
		file.Reload.Command = flags.Reload.Command
	}
	return file
}

// agentOptions checks the config and turns it into the agent's Config
// (without the server, token, logger and metrics, which need I/O).
func (c agentConfig) agentOptions() (agent.Config, error) {
	out := agent.Config{TTL: c.TTL, Files: agent.Files{Dir: c.Out, Key: c.Files.Key, Cert: c.Files.Cert,
		Chain: c.Files.Chain, Fullchain: c.Files.Fullchain, Bundle: c.Files.Bundle, UID: -1, GID: -1}}
	if c.KeyType != "" {
		alg, err := keys.ParseAlgorithm(c.KeyType)
		if err != nil {
			return out, err
		}
		out.KeyType = alg
	}
	if c.Owner != "" {
		u, g, hasGroup := strings.Cut(c.Owner, ":")
		uid, err := strconv.Atoi(u)
		if err != nil || uid < 0 {
			return out, fmt.Errorf("owner %q: give numeric uid[:gid], e.g. 1000:1000", c.Owner)
		}
		out.Files.UID = uid
		if hasGroup {
			gid, err := strconv.Atoi(g)
			if err != nil || gid < 0 {
				return out, fmt.Errorf("owner %q: give numeric uid[:gid], e.g. 1000:1000", c.Owner)
			}
			out.Files.GID = gid
		}
	}
	if c.BundleInterval != "" {
		d, err := time.ParseDuration(c.BundleInterval)
		if err != nil || d <= 0 {
			return out, fmt.Errorf("bundle interval %q is not a positive duration like 5m", c.BundleInterval)
		}
		out.BundleInterval = d
	}
	if len(c.Reload.Command) > 0 {
		out.Hooks = append(out.Hooks, agent.CommandHook(c.Reload.Command))
	}
	if c.Reload.PIDFile != "" {
		sig, err := agent.ParseSignal(c.Reload.Signal)
		if err != nil {
			return out, err
		}
		out.Hooks = append(out.Hooks, agent.SignalHook(c.Reload.PIDFile, sig))
	}
	return out, nil
}

// agentRoots finds the anchors to trust the server with: --ca-file, else
// the bundle the agent wrote before, else the root the token pins.
func agentRoots(ctx context.Context, c agentConfig, files agent.Files, tok string) (*x509.CertPool, error) {
	if c.CAFile != "" {
		return loadPool(c.CAFile)
	}
	bundle := files.Bundle
	if bundle == "" {
		bundle = filepath.Join(c.Out, bundleFile)
	}
	if fileExists(bundle) {
		return loadPool(bundle)
	}
	if tok == "" {
		return nil, errors.New("no root to trust the server with: pass --ca-file, or --token for a first enrollment")
	}
	claims, err := token.Inspect(tok)
	if err != nil {
		return nil, err
	}
	if claims.RootFingerprint == "" {
		return nil, errors.New("the token pins no root and no --ca-file was given: pass --ca-file root.pem")
	}
	return fetchPinnedRoot(ctx, c.Server, claims.RootFingerprint)
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
