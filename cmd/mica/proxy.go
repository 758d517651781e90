package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/proxy"
	"github.com/mica-pki/mica/internal/strictyaml"
	"github.com/mica-pki/mica/internal/telemetry"
	"github.com/mica-pki/mica/mtls"
	"github.com/mica-pki/mica/mtls/mtlsprom"
	"github.com/mica-pki/mica/mtls/workload"
	"github.com/mica-pki/mica/revocation"
)

// proxyConfig is `mica proxy`'s config file. The listeners reload on
// SIGHUP and when the file changes; the rest is read at start.
type proxyConfig struct {
	// Credentials are the proxy's own certificate and trust bundle.
	Credentials proxyCredentials `yaml:"credentials"`
	Revocation  proxyRevocation  `yaml:"revocation"`
	// PinnedCAs, when set, accept only peers (clients and upstreams) whose
	// verified path goes through one of these CAs: "sha256/<base64 of the
	// SHA-256 of the CA's SubjectPublicKeyInfo>". Pin the root to survive
	// the rotation of intermediates.
	PinnedCAs []string `yaml:"pinned_cas"`
	// Metrics is the /metrics address; default 127.0.0.1:9125, "off" for none.
	Metrics string `yaml:"metrics"`
	// DrainTimeout bounds the wait for requests in flight at shutdown and
	// on removed listeners; default 30s.
	DrainTimeout duration.Duration      `yaml:"drain_timeout"`
	Listeners    []proxy.ListenerConfig `yaml:"listeners"`

	// pins and crlPolicy are PinnedCAs and Revocation.CRLPolicy, parsed.
	pins      []mtls.SPKIPin
	crlPolicy mtls.CRLPolicy
}

// proxyCredentials names one source: the directory the agent (or `mica cert
// issue`) writes, or a Workload API socket.
type proxyCredentials struct {
	Dir         string `yaml:"dir"`
	WorkloadAPI string `yaml:"workload_api"`
}

type proxyRevocation struct {
	// Feed is the mica server (https://host:port) whose push feed the
	// proxy follows, over mTLS with FeedCredentials (default: the proxy's).
	Feed            string            `yaml:"feed"`
	FeedCredentials *proxyCredentials `yaml:"feed_credentials"`
	// CRLURLs are fetched from the start, with the distribution points
	// named in verified peers' certificates, every CRLInterval (default 1m).
	CRLURLs     []string          `yaml:"crl_urls"`
	CRLInterval duration.Duration `yaml:"crl_interval"`
	// CRLPolicy is soft-fail (the default: a peer whose issuer has no
	// valid, fresh CRL is accepted) or hard-fail (it is refused); CRLWait
	// bounds how long a hard-fail handshake waits for a CRL being fetched
	// for the first time (default 2s).
	CRLPolicy string            `yaml:"crl_policy"`
	CRLWait   duration.Duration `yaml:"crl_wait"`
	// Disabled says, explicitly, that revoked certificates are accepted
	// until they expire.
	Disabled bool `yaml:"disabled"`
}

const (
	defaultProxyMetrics = "127.0.0.1:9125"
	feedPath            = "/v1/revocations/feed"
	// feedWait is how long start-up waits for the feed's first snapshot
	// before serving anyway (the CRL, if configured, still applies).
	feedWait = 15 * time.Second
	// maxCRLWait bounds crl_wait: a handshake held longer than this is one
	// most clients have given up on.
	maxCRLWait  = 30 * time.Second
	crlSoftFail = "soft-fail"
	crlHardFail = "hard-fail"
)

func parseProxyConfig(data []byte, name string) (*proxyConfig, error) {
	var c proxyConfig
	if err := strictyaml.Decode(data, &c); err != nil {
		return nil, fmt.Errorf("proxy config %s: %w", name, err)
	}
	if err := c.Credentials.check("credentials"); err != nil {
		return nil, fmt.Errorf("proxy config %s: %w", name, err)
	}
	r := c.Revocation
	if r.FeedCredentials != nil {
		if err := r.FeedCredentials.check("revocation.feed_credentials"); err != nil {
			return nil, fmt.Errorf("proxy config %s: %w", name, err)
		}
	}
	switch {
	case r.Disabled && (r.Feed != "" || len(r.CRLURLs) > 0):
		return nil, fmt.Errorf("proxy config %s: revocation: disabled with a feed or CRLs; choose one", name)
	case !r.Disabled && r.Feed == "" && len(r.CRLURLs) == 0:
		return nil, fmt.Errorf("proxy config %s: revocation: set feed (the mica server, e.g. https://mica.example.org:8443) and/or crl_urls, or disabled: true to accept revoked certificates until they expire", name)
	}
	if r.Feed != "" {
		if _, _, err := feedURL(r.Feed); err != nil {
			return nil, fmt.Errorf("proxy config %s: %w", name, err)
		}
	}
	if err := c.parseVerification(); err != nil {
		return nil, fmt.Errorf("proxy config %s: %w", name, err)
	}
	if c.Metrics == "" {
		c.Metrics = defaultProxyMetrics
	}
	if err := proxy.Validate(c.Listeners); err != nil {
		return nil, fmt.Errorf("proxy config %s: %w", name, err)
	}
	return &c, nil
}

// parseVerification reads the CRL policy and the pinned CAs.
func (c *proxyConfig) parseVerification() error {
	r := c.Revocation
	switch r.CRLPolicy {
	case "", crlSoftFail:
		c.crlPolicy = mtls.CRLSoftFail
		if r.CRLWait != 0 {
			return fmt.Errorf("revocation: crl_wait is how long a hard-fail handshake waits for a first CRL; set crl_policy: hard-fail or remove it")
		}
	case crlHardFail:
		c.crlPolicy = mtls.CRLHardFail
		if len(r.CRLURLs) == 0 {
			return fmt.Errorf("revocation: crl_policy hard-fail needs crl_urls, at least the root's CRL (the mica server serves it at /crl/<root key id>.crl): without it every peer would be refused")
		}
		if r.CRLWait < 0 || r.CRLWait.D() > maxCRLWait {
			return fmt.Errorf("revocation: crl_wait %s: give a duration between 0 and %s (default 2s)", r.CRLWait.D(), maxCRLWait)
		}
	default:
		return fmt.Errorf("revocation: crl_policy %q: use soft-fail (the default: accept a peer whose issuer has no valid, fresh CRL) or hard-fail (refuse it)", r.CRLPolicy)
	}
	for i, s := range c.PinnedCAs {
		pin, err := mtls.ParsePin(s)
		if err != nil {
			return fmt.Errorf("pinned_cas: entry %d: %w (e.g. from: openssl x509 -in ca.pem -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64)", i+1, err)
		}
		c.pins = append(c.pins, pin)
	}
	return nil
}

func (c proxyCredentials) check(field string) error {
	if (c.Dir == "") == (c.WorkloadAPI == "") {
		return fmt.Errorf("%s: set exactly one of dir (the agent's --out directory) and workload_api (e.g. unix:///run/mica/agent.sock)", field)
	}
	return nil
}

// feedURL turns the configured server into the feed's URL and the name
// its certificate must carry.
func feedURL(server string) (string, string, error) {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return "", "", fmt.Errorf("revocation: feed %q must be the mica server's https:// URL", server)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = feedPath
	}
	return u.String(), u.Hostname(), nil
}

// restartOnly is the part of the config a reload cannot change.
func (c *proxyConfig) restartOnly() proxyConfig {
	r := *c
	r.Listeners = nil
	return r
}

func runProxy(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "proxy")
	configPath := fs.String("config", "", "the proxy's config file (required)")
	watch := fs.Duration("watch-interval", 2*time.Second, "how often to check the config file for changes (0: only on SIGHUP)")
	logFormat := fs.String("log-format", "text", "text or json")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if *configPath == "" {
		return usageError("proxy needs --config proxy.yaml (see docs/proxy.md)")
	}
	log, err := newLogger(env, *logFormat)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(*configPath)
	if err != nil {
		return fmt.Errorf("reading proxy config: %w", err)
	}
	cfg, err := parseProxyConfig(data, *configPath)
	if err != nil {
		return err
	}

	reg := telemetry.NewRegistry(version)
	handshakes, err := mtlsprom.New(reg)
	if err != nil {
		return err
	}
	metrics, err := proxy.NewMetrics(reg)
	if err != nil {
		return err
	}
	src, closeSrc, err := openSource(ctx, cfg.Credentials, log)
	if err != nil {
		return err
	}
	defer closeSrc()

	// The long-lived parts run together: the first to end, with or
	// without an error, stops the rest, and runProxy returns once all
	// have stopped, with the first error.
	ctx, cancel := context.WithCancel(ctx)
	g, ctx := errgroup.WithContext(ctx)
	defer g.Wait()
	defer cancel()
	start := func(name string, f func(context.Context) error) {
		g.Go(func() error {
			defer cancel()
			if err := f(ctx); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	}
	opts := proxy.Options{Source: src, HandshakeMetrics: handshakes, Metrics: metrics, Logger: log, DrainTimeout: cfg.DrainTimeout.D(),
		PinnedCAs: cfg.pins}
	if cfg.Revocation.Feed != "" {
		feedSrc := src
		if fc := cfg.Revocation.FeedCredentials; fc != nil {
			s, closeFeedSrc, err := openSource(ctx, *fc, log)
			if err != nil {
				return err
			}
			defer closeFeedSrc()
			feedSrc = s
		}
		feedMetrics, err := telemetry.NewFeedClientMetrics(reg, log)
		if err != nil {
			return err
		}
		sub, ready, err := newFeedSubscriber(cfg.Revocation.Feed, feedSrc, feedMetrics)
		if err != nil {
			return err
		}
		start("revocation feed", sub.Run)
		select {
		case <-ready:
			log.Info("revocation feed followed", slog.String("server", cfg.Revocation.Feed), slog.Int64("seq", sub.Set().Seq()))
		case <-time.After(feedWait):
			log.Warn("no snapshot from the revocation feed yet: serving anyway, revocations apply once it arrives", slog.String("server", cfg.Revocation.Feed))
		case <-ctx.Done():
			return nil
		}
		opts.Revocations = sub.Set()
	}
	if len(cfg.Revocation.CRLURLs) > 0 {
		crl, err := mtls.NewCRLChecker(mtls.CRLConfig{URLs: cfg.Revocation.CRLURLs, Interval: cfg.Revocation.CRLInterval.D(),
			Roots: src.Roots, Logger: log})
		if err != nil {
			return err
		}
		start("CRL", crl.Run)
		opts.CRL, opts.CRLPolicy, opts.CRLWait = crl, cfg.crlPolicy, cfg.Revocation.CRLWait.D()
	} else if cfg.Revocation.Disabled {
		log.Warn("revocation checking is disabled: revoked certificates are accepted until they expire")
	}

	p, err := proxy.New(opts)
	if err != nil {
		return err
	}
	if err := p.Apply(cfg.Listeners); err != nil {
		return err
	}
	start("proxy", p.Run)
	metricsAddr, err := serveMetrics(start, cfg.Metrics, reg, log)
	if err != nil {
		p.Shutdown()
		return err
	}
	for _, l := range p.Listeners() {
		fmt.Fprintf(env.stdout, "mica proxy: listener %s (%s) on %s\n", l.Name, l.Mode, l.Addr)
	}
	fmt.Fprintf(env.stdout, "mica proxy ready: metrics on %s\n", metricsAddr)

	r := &proxyReloader{path: *configPath, last: sha256.Sum256(data), running: cfg.restartOnly(), p: p, metrics: metrics, log: log}
	start("config reload", func(ctx context.Context) error { return r.run(ctx, *watch) })
	return g.Wait()
}

// openSource opens the credential source the config names.
func openSource(ctx context.Context, c proxyCredentials, log *slog.Logger) (mtls.Source, func(), error) {
	if c.Dir != "" {
		s, err := mtls.NewFileSource(c.Dir, mtls.WithLogger(log))
		if err != nil {
			return nil, nil, err
		}
		return s, func() { s.Close() }, nil
	}
	addr := c.WorkloadAPI
	if strings.HasPrefix(addr, "/") {
		addr = "unix://" + addr
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := workload.NewSource(wctx, addr)
	if err != nil {
		return nil, nil, err
	}
	return s, func() { s.Close() }, nil
}

// newFeedSubscriber follows the server's revocation feed over mTLS with
// src's credential; the server is judged by its certificate's names (it
// must name the host in the URL) against src's trust bundle. ready closes
// at the first snapshot; m watches the connection.
func newFeedSubscriber(server string, src mtls.Source, m *telemetry.FeedClientMetrics) (*revocation.Subscriber, <-chan struct{}, error) {
	u, host, err := feedURL(server)
	if err != nil {
		return nil, nil, err
	}
	tc, err := mtls.ClientConfig(mtls.Options{Source: src, Authorize: mtls.AuthorizeIDs(host)})
	if err != nil {
		return nil, nil, err
	}
	ready := make(chan struct{})
	first := true
	sub, err := revocation.NewSubscriber(revocation.Config{URL: u, TLS: tc, OnConnect: m.Connected, OnDisconnect: m.Disconnected,
		OnReset: func(revocation.SnapshotInfo) {
			if first { // OnReset is called from Run's one goroutine
				first = false
				close(ready)
			}
		}})
	return sub, ready, err
}

// serveMetrics serves /metrics on addr unless it is "off", and returns the
// bound address.
func serveMetrics(start func(string, func(context.Context) error), addr string, reg *prometheus.Registry, log *slog.Logger) (string, error) {
	ms, err := telemetry.Listen(addr, reg, log)
	if err != nil {
		return "", fmt.Errorf("%w (the metrics: setting of the proxy config)", err)
	}
	if ms == nil {
		return "off", nil
	}
	start("metrics", ms.Run)
	return ms.Addr(), nil
}

// proxyReloader applies the config file's listeners on SIGHUP and when the
// file's content changes.
type proxyReloader struct {
	path    string
	last    [sha256.Size]byte
	running proxyConfig
	p       *proxy.Proxy
	metrics *proxy.Metrics
	log     *slog.Logger
}

func (r *proxyReloader) run(ctx context.Context, every time.Duration) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var tick <-chan time.Time
	if every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			r.reload("SIGHUP", true)
		case <-tick:
			r.reload("file changed", false)
		}
	}
}

// reload reads the file and applies it; unless forced, only when its
// content changed. A config that fails leaves the running one in place.
func (r *proxyReloader) reload(why string, force bool) {
	data, err := os.ReadFile(r.path)
	if err != nil {
		if force {
			r.failed(why, fmt.Errorf("reading proxy config: %w", err))
		}
		return // a file being replaced may be missing for a moment
	}
	sum := sha256.Sum256(data)
	if !force && sum == r.last {
		return
	}
	r.last = sum
	cfg, err := parseProxyConfig(data, r.path)
	if err == nil {
		err = r.p.Apply(cfg.Listeners)
	}
	if err != nil {
		r.failed(why, err)
		return
	}
	r.metrics.Reloaded(nil)
	if !reflect.DeepEqual(cfg.restartOnly(), r.running) {
		r.log.Warn("proxy config: credentials, revocation, pinned_cas, metrics and drain_timeout change only at restart; the listeners were reloaded")
	}
	var names []string
	for _, l := range r.p.Listeners() {
		names = append(names, fmt.Sprintf("%s=%s", l.Name, l.Addr))
	}
	r.log.Info("proxy config reloaded", slog.String("why", why), slog.String("listeners", strings.Join(names, " ")))
}

func (r *proxyReloader) failed(why string, err error) {
	r.metrics.Reloaded(err)
	r.log.Error("proxy config not reloaded: the running config stays", slog.String("why", why), slog.String("error", err.Error()))
}
