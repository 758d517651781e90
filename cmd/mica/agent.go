package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/credential"
	"github.com/mica-pki/mica/internal/agent"
	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/strictyaml"
	"github.com/mica-pki/mica/internal/telemetry"
	"github.com/mica-pki/mica/internal/workloadapi"
)

// agentConfig is the agent's YAML config file; flags override it. The
// identity fields at the top level describe the agent's one identity;
// several go under identities, each handed only to the local processes
// whose uid or gid it lists.
type agentConfig struct {
	Server         string `yaml:"server"`
	CAFile         string `yaml:"ca_file"`
	Socket         string `yaml:"socket"`
	Metrics        string `yaml:"metrics"`
	BundleInterval string `yaml:"bundle_interval"`
	agentIdentity  `yaml:",inline"`
	Identities     []agentIdentity `yaml:"identities"`
	// Discovery, when set, scans this host and reports what it finds
	// (agent_discovery.go).
	Discovery *agentDiscovery `yaml:"discovery"`
}

// agentIdentity is one identity the agent keeps fresh.
type agentIdentity struct {
	TokenFile string      `yaml:"token_file"`
	Out       string      `yaml:"out"`
	Files     agentFiles  `yaml:"files"`
	Owner     string      `yaml:"owner"` // uid[:gid]
	KeyType   string      `yaml:"key_type"`
	TTL       string      `yaml:"ttl"`
	Reload    agentReload `yaml:"reload"`
	// UIDs and GIDs of the local processes that may fetch this identity
	// from the Workload API; both empty: any local process.
	UIDs []uint32 `yaml:"uids"`
	GIDs []uint32 `yaml:"gids"`

	token string // from --token; never logged (token_file is read by the agent)
}

// agentFiles moves single files out of the identity's directory.
type agentFiles struct {
	Key       string `yaml:"key"`
	Cert      string `yaml:"cert"`
	Chain     string `yaml:"chain"`
	Fullchain string `yaml:"fullchain"`
	Bundle    string `yaml:"bundle"`
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
	var reloadCmd string
	fs.StringVar(&fc.Server, "server", env.getenv("MICA_SERVER"), "server URL (env MICA_SERVER)")
	fs.StringVar(&fc.CAFile, "ca-file", env.getenv("MICA_CA_FILE"), "root certificate to trust the server with (default: bundle.pem in --out, else the root the token pins)")
	fs.StringVar(&fc.token, "token", env.getenv("MICA_TOKEN"), "one-time token for the first enrollment (env MICA_TOKEN)")
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
	ids, err := cfg.identities()
	if err != nil {
		return err
	}
	log, err := newLogger(env, *logFormat)
	if err != nil {
		return err
	}
	interval, err := cfg.bundleInterval()
	if err != nil {
		return usageError("%v", err)
	}
	reg := telemetry.NewRegistry(version)
	metrics, err := agent.NewMetrics(reg)
	if err != nil {
		return err
	}
	changes := newBroadcast()
	var agents []*agent.Agent
	var firstClient *client.Client
	for _, id := range ids {
		opts, err := id.agentOptions()
		if err != nil {
			return usageError("%v", err)
		}
		var ag *agent.Agent
		c, err := agentClient(ctx, cfg, id, client.Config{Server: cfg.Server,
			GetCertificate: func() (*tls.Certificate, error) { return ag.TLSCertificate() }})
		if err != nil {
			return err
		}
		defer c.Close()
		if firstClient == nil {
			firstClient = c // discovery reports with the first identity
		}
		opts.Server, opts.Token, opts.Logger, opts.Metrics = c, id.token, log, metrics
		opts.BundleInterval, opts.OnChange = interval, changes.notify
		if ag, err = agent.New(opts); err != nil {
			return err
		}
		if err := ag.Start(ctx); err != nil {
			return err
		}
		agents = append(agents, ag)
	}
	// SIGUSR1 renews every identity at once (a blocked one reads its token
	// file at once).
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-usr1:
				for _, ag := range agents {
					ag.RenewNow()
				}
			}
		}
	}()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(agents)+2)
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
	for _, ag := range agents {
		start("agent", ag.Run)
	}
	if cfg.Discovery != nil {
		start("discovery", func(ctx context.Context) error { return runAgentDiscovery(ctx, firstClient, *cfg.Discovery, log) })
	}
	socket := orDefault(cfg.Socket, defaultAgentSocket)
	if socket != "off" {
		wapi, err := workloadapi.New(workloadapi.Config{
			Snapshot: workloadSnapshot(agents, ids, changes), Logger: log,
			FetchJWTSVID: func(ctx context.Context, id spiffeid.ID, aud []string) (string, error) {
				for _, ag := range agents {
					if s, _ := ag.State(); s.Credential != nil && s.Credential.ID == id.String() {
						svid, err := ag.FetchJWTSVID(ctx, aud)
						if err != nil {
							return "", err
						}
						return svid.Token, nil
					}
				}
				return "", fmt.Errorf("agent: no identity %s here", id)
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
	ms, err := telemetry.Listen(metricsAddr, reg, log)
	if err != nil {
		return err
	}
	if ms != nil {
		start("metrics", ms.Run)
		metricsAddr = ms.Addr()
	}
	var names []string
	for _, ag := range agents {
		names = append(names, ag.Name())
	}
	log.Info("mica agent running", slog.String("identities", strings.Join(names, ",")), slog.String("socket", socket), slog.String("metrics", metricsAddr))
	fmt.Fprintf(env.stdout, "mica agent ready: identity %s, socket %s, metrics %s\n", strings.Join(names, ","), socket, metricsAddr)

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

// broadcast is a channel closed and replaced on every change, so one wait
// covers changes of several agents.
type broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

func newBroadcast() *broadcast { return &broadcast{ch: make(chan struct{})} }

func (b *broadcast) notify() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.ch)
	b.ch = make(chan struct{})
}

func (b *broadcast) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ch
}

// workloadSnapshot shows the agents' state to the Workload API, each
// identity with the local processes its config entitles (uids, gids).
func workloadSnapshot(agents []*agent.Agent, ids []agentIdentity, changes *broadcast) func() (workloadapi.Snapshot, <-chan struct{}) {
	return func() (workloadapi.Snapshot, <-chan struct{}) {
		// Take the channel first: a change after this point closes it,
		// so no rotation is missed between reading and waiting.
		changed := changes.wait()
		var snap workloadapi.Snapshot
		for i, ag := range agents {
			s, _ := ag.State()
			if s.Credential == nil {
				continue
			}
			id, err := spiffeid.FromString(s.Credential.ID)
			if err != nil {
				continue // a DNS or IP identity has no SVID
			}
			snap.SVIDs = append(snap.SVIDs, workloadapi.X509SVID{ID: id, Chain: s.Credential.Chain, Key: s.Credential.Key,
				Entitlement: workloadapi.Entitlement{UIDs: ids[i].UIDs, GIDs: ids[i].GIDs}})
			if snap.Roots == nil {
				snap.Roots, snap.JWTBundle, snap.TrustDomain = s.Roots, s.JWTBundle, id.TrustDomain()
				if len(snap.Roots) == 0 {
					snap.Roots = s.Credential.Roots
				}
			}
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
	if err := strictyaml.Decode(data, &c); err != nil {
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
	set(&file.Socket, flags.Socket)
	set(&file.Metrics, flags.Metrics)
	set(&file.BundleInterval, flags.BundleInterval)
	set(&file.token, flags.token)
	set(&file.TokenFile, flags.TokenFile)
	set(&file.Out, flags.Out)
	set(&file.Owner, flags.Owner)
	set(&file.KeyType, flags.KeyType)
	set(&file.TTL, flags.TTL)
	set(&file.Reload.PIDFile, flags.Reload.PIDFile)
	set(&file.Reload.Signal, flags.Reload.Signal)
	if len(flags.Reload.Command) > 0 {
		file.Reload.Command = flags.Reload.Command
	}
	return file
}

// identities lists what the agent keeps fresh: the top-level identity, or
// each entry of identities (which inherit the top level's key type and
// TTL), with their tokens read.
func (c agentConfig) identities() ([]agentIdentity, error) {
	if c.Server == "" {
		return nil, usageError("agent needs --server (or a --config that sets server)")
	}
	ids := c.Identities
	if len(ids) == 0 {
		ids = []agentIdentity{c.agentIdentity}
	} else if c.Out != "" || c.token != "" || c.TokenFile != "" {
		return nil, usageError("the config lists identities: give out and token_file in each, not at the top level or as flags")
	}
	for i := range ids {
		id := &ids[i]
		if id.Out == "" {
			return nil, usageError("agent needs --out (or out in each identity of the config)")
		}
		if id.KeyType == "" {
			id.KeyType = c.KeyType
		}
		if id.TTL == "" {
			id.TTL = c.TTL
		}
		if id.TokenFile != "" {
			// A missing token file is fine once enrolled (the token is
			// spent); one that cannot be read is a mistake to say now.
			if _, err := os.ReadFile(id.TokenFile); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("reading token: %w", err)
			}
		}
	}
	return ids, nil
}

// firstToken is the token a first enrollment would use: the token file's,
// else --token. It pins the root when nothing else says whom to trust.
func (c agentIdentity) firstToken() string {
	if c.TokenFile != "" {
		if b, err := os.ReadFile(c.TokenFile); err == nil && strings.TrimSpace(string(b)) != "" {
			return strings.TrimSpace(string(b))
		}
	}
	return c.token
}

func (c agentConfig) bundleInterval() (time.Duration, error) {
	if c.BundleInterval == "" {
		return 0, nil
	}
	d, err := duration.Parse(c.BundleInterval)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("bundle interval %q is not a positive duration like 5m", c.BundleInterval)
	}
	return d, nil
}

// agentOptions checks one identity and turns it into the agent's Config
// (without the server, token, logger and metrics, which need I/O).
func (c agentIdentity) agentOptions() (agent.Config, error) {
	out := agent.Config{TTL: c.TTL, TokenFile: c.TokenFile, Dir: credential.Dir{Path: c.Out, Copies: credential.Files{
		Key: c.Files.Key, Cert: c.Files.Cert, Chain: c.Files.Chain, Fullchain: c.Files.Fullchain, Bundle: c.Files.Bundle}}}
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
		out.Dir.Owner = &credential.Owner{UID: uid, GID: -1}
		if hasGroup {
			gid, err := strconv.Atoi(g)
			if err != nil || gid < 0 {
				return out, fmt.Errorf("owner %q: give numeric uid[:gid], e.g. 1000:1000", c.Owner)
			}
			out.Dir.Owner.GID = gid
		}
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

// agentClient makes the client of one identity. It trusts --ca-file, else
// the bundle the agent wrote before, else the root the token pins
// (client.Bootstrap).
func agentClient(ctx context.Context, c agentConfig, id agentIdentity, cfg client.Config) (*client.Client, error) {
	anchors := c.CAFile
	if anchors == "" {
		bundle := id.Files.Bundle
		if bundle == "" {
			bundle = filepath.Join(id.Out, bundleFile)
		}
		if fileExists(bundle) {
			anchors = bundle
		}
	}
	if anchors != "" {
		roots, err := loadPool(anchors)
		if err != nil {
			return nil, err
		}
		cfg.Roots = roots
		return client.New(cfg)
	}
	tok := id.firstToken()
	if tok == "" {
		return nil, errors.New("no root to trust the server with: pass --ca-file, or a token (--token, --token-file) for a first enrollment")
	}
	return client.Bootstrap(ctx, cfg, tok)
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
