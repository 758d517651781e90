package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/api"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/feed"
	"github.com/mica-pki/mica/internal/health"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/procmem"
	"github.com/mica-pki/mica/internal/servercert"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/telemetry"
)

func runServe(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "serve")
	dataDir := fs.String("data-dir", envOr(env, "MICA_DATA_DIR", "mica-data"), "data directory (env MICA_DATA_DIR)")
	configPath := fs.String("config", "", "config file (default: mica.yaml in the data directory)")
	listen := fs.String("listen", "", "address to serve on (default: the config's, else "+defaultListen+")")
	httpListen := fs.String("http-listen", "", "plain-HTTP address for CRL and OCSP, or off (default: the config's, else "+defaultHTTPListen+")")
	publicURL := fs.String("public-url", "", "where relying parties reach the CRL and OCSP listener, named in every certificate (default: the config's public_url, else http://<http-listen>)")
	metricsListen := fs.String("metrics-listen", "", "plain-HTTP address for Prometheus /metrics, or off (default: the config's, else "+defaultMetrics+")")
	db := fs.String("db", env.getenv("MICA_DB"), "postgres:// URL (env MICA_DB; default: the config's, else SQLite in the data directory)")
	passFile := fs.String("passphrase-file", "", "file holding the CA key passphrase (or set MICA_PASSPHRASE)")
	dev := fs.Bool("dev", false, "first try: initialise the data directory if needed (passphrase kept in it) and serve")
	logFormat := fs.String("log-format", "text", "text or json")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	tuneRuntime(env)
	log, err := newLogger(env, *logFormat)
	if err != nil {
		return err
	}
	d := dataPaths{*dataDir}
	if *dev && !fileExists(d.rootCert()) {
		pass, err := newDevPassphrase(d)
		if err != nil {
			return err
		}
		if err := initDataDir(ctx, env, initOptions{data: d, trustDomain: "example.org", keyType: string(keys.Default),
			passphrase: pass, adminName: "admin", dbURL: *db}); err != nil {
			return err
		}
	}
	if *configPath == "" {
		*configPath = d.config()
	}
	cfgData, err := os.ReadFile(*configPath)
	if err != nil {
		return fmt.Errorf("reading config: %w (run `mica init` or `mica serve --dev` first, or pass --config)", err)
	}
	cfg, err := parseConfig(cfgData, *configPath)
	if err != nil {
		return err
	}
	// SIGHUP reloads the config (below); caught from here on, so that it
	// never kills a server that is starting.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	startedAs := restartOnly(cfg)
	if *listen != "" {
		cfg.Listen = *listen
	}
	if *httpListen != "" {
		cfg.HTTPListen = *httpListen
	}
	pass, err := readPassphrase(env, *passFile, d)
	if err != nil {
		return err
	}

	// Every listener is bound before anything else happens: a port that
	// is taken ends the start here, before mica issues its own
	// certificate, records an event or starts a loop.
	lns, err := bindListeners(cfg.Listen, cfg.HTTPListen, cfg.metricsListen(*metricsListen), log)
	if err != nil {
		return err
	}
	defer lns.close()
	httpAddr := "off"
	if lns.http != nil {
		httpAddr = boundAddr(cfg.HTTPListen, lns.http.Addr())
	}
	if err := cfg.settlePublicURL(*publicURL, httpAddr); err != nil {
		return err
	}

	reg := telemetry.NewRegistry(version)
	p, err := openParts(ctx, d, cfg, pass, openOptions{dbURL: *db, log: log, registry: reg})
	if err != nil {
		return err
	}
	defer p.Close()
	if err := p.authority.RecordSystemEvent(ctx, store.ActionPolicyLoaded,
		fmt.Sprintf("config %s sha256:%s, %d profiles", *configPath, configHash(cfgData), len(cfg.Profiles))); err != nil {
		return err
	}
	// The policy every server applies is the database's active version;
	// the first server on an empty database makes this file's policy
	// version 1.
	if differs, err := p.authority.SeedPolicy(ctx, cfg.doc); err != nil {
		return err
	} else if differs {
		log.Warn("the database's active policy differs from this config file's; it applies the database's: propose the file with `mica policy propose` or SIGHUP",
			slog.Int64("policy_version", p.authority.PolicyVersion()), slog.String("config", *configPath))
	}
	reload := newReloader(*configPath, cfgData, startedAs, p, log)
	// Loops that start with the rest once everything is wired.
	type namedRun struct {
		name string
		run  func(context.Context) error
	}
	var eventLoops []namedRun
	if err := startEventLoops(ctx, func(name string, run func(context.Context) error) {
		eventLoops = append(eventLoops, namedRun{name, run})
	}, p, log); err != nil {
		return err
	}
	certs, err := newServerCertificate(ctx, p, cfg.ServerNames, log)
	if err != nil {
		return err
	}
	// The audit tree loads while the CRLs are built (both read the whole
	// store at start, one machine core each): a million leaves take a
	// second or two. A failure here is the checkpoint loop's to report,
	// whose first round syncs again. It ends with ctx, and serve waits for
	// it before the store closes.
	var treeLoad sync.WaitGroup
	treeLoad.Go(func() { p.audit.Sync(ctx) })
	defer treeLoad.Wait()
	rev, err := newRevocationOutputs(ctx, p, log)
	if err != nil {
		return err
	}
	// The CA rotates while it serves: each step (here or on another server
	// sharing the database) updates the CRLs and OCSP responders, and the
	// server's own certificate moves to the active intermediate.
	p.caChanged.set(func() {
		if err := rev.sync(ctx); err != nil {
			log.Error("following the CA rotation: the CRLs and OCSP responders keep their previous set", slog.String("error", err.Error()))
		}
		active := p.rotation.Signing(certs.Leaf().NotAfter).Cert.SubjectKeyId
		if err := certs.Follow(ctx, active); err != nil {
			log.Error("following the CA rotation: the server certificate is renewed on its schedule", slog.String("error", err.Error()))
		}
	})
	httpMetrics, err := telemetry.NewHTTPMetrics(p.registry)
	if err != nil {
		return err
	}
	if err := registerServerMetrics(p, rev, certs, log); err != nil {
		return err
	}

	started := time.Now()
	var handler http.Handler = api.New(api.Config{
		Authority: p.authority, TrustDomain: cfg.TrustDomain, Logger: log, Feed: rev.hub.Handler(), Webhooks: p.webhooks,
		Ready: (&health.Checker{Dir: d.dir, Logger: log, Ping: func(ctx context.Context) error {
			_, err := p.store.LastEventSeq(ctx)
			return err
		}}).Check,
		Stats: func() client.Stats {
			rss, peak := procmem.Read()
			return client.Stats{Version: version, UptimeSeconds: time.Since(started).Seconds(), PeakRSSBytes: peak, RSSBytes: rss}
		},
	})
	handler, door, err := withACME(p, cfg, handler, lns.api.Addr(), log)
	if err != nil {
		return err
	}
	if door != nil {
		eventLoops = append(eventLoops, namedRun{"ACME order recovery", door.Run})
	}
	handler, console, err := withConsole(p, cfg, handler, log)
	if err != nil {
		return err
	}
	eventLoops = append(eventLoops, namedRun{"web console", console.Run})
	apiSrv := &http.Server{
		Handler: traced(p, httpMetrics.Wrap("api", handler)),
		// The API verifies a connection's client chain once; the feed's
		// lag counts what a subscriber has not read from its connection.
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return api.ConnContext(feed.ConnContext(ctx, c), c)
		},
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS13,
			GetCertificate: certs.GetCertificate,
			// The client certificate is requested, not verified here: the
			// authority judges it, so that an expired or revoked one gets a
			// specific answer instead of a bare handshake failure.
			ClientAuth: tls.RequestClientCert,
		},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	servers := []namedServer{{"API", apiSrv, func() error { return apiSrv.ServeTLS(lns.api, "", "") }}}
	if lns.http != nil {
		httpSrv := revocationServer(httpMetrics.Wrap("revocation", rev.handler(p)), log)
		servers = append(servers, namedServer{"CRL and OCSP listener", httpSrv, func() error { return httpSrv.Serve(lns.http) }})
	}
	if lns.metrics != nil {
		metricsSrv := metricsServer(reg, log)
		servers = append(servers, namedServer{"metrics listener", metricsSrv, func() error { return metricsSrv.Serve(lns.metrics) }})
	}

	url := "https://" + lns.api.Addr().String()
	log.Info("mica serving", slog.String("url", url), slog.String("data_dir", d.dir), slog.String("store", storeName(*db, cfg.Database)))
	if lns.http != nil {
		httpURL := "http://" + lns.http.Addr().String()
		log.Info("revocation endpoints", slog.String("url", httpURL), slog.String("public_url", cfg.PublicURL))
		fmt.Fprintf(env.stdout, "revocation (CRL, OCSP) on %s (certificates name %s)\n", httpURL, cfg.PublicURL)
	}
	if lns.metrics != nil {
		log.Info("metrics", slog.String("url", "http://"+lns.metrics.Addr().String()+"/metrics"))
		fmt.Fprintf(env.stdout, "metrics on http://%s/metrics\n", lns.metrics.Addr())
	}
	if p.tracing.Enabled() {
		log.Info("tracing on", slog.String("otlp_endpoint", cfg.Tracing.OTLPEndpoint), slog.Float64("sample_ratio", cfg.Tracing.SampleRatio))
	}
	fmt.Fprintf(env.stdout, "mica %s serving on %s\n", version, url)
	if *dev {
		printDevNextSteps(env, d, url)
	}

	// Everything runs in one group: the first part to fail stops the
	// rest, and a signal stops them all. The loops that write to the store
	// (audit checkpoints, failure counts, limit summaries) are waited for
	// before the store closes, so their last writes land.
	g, gctx := errgroup.WithContext(ctx)
	loop := func(name string, run func(context.Context) error) {
		g.Go(func() error {
			err := run(gctx)
			if gctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%s stopped: %w", name, orStopped(err))
		})
	}
	loop("audit checkpoints", p.audit.Run)
	loop("failed-authentication counter", p.failures.Run)
	loop("rate limits", p.guard.Run)
	loop("server certificate renewal", certs.Run)
	loop("config reload", func(ctx context.Context) error { return reload.run(ctx, hup) })
	loop("policy follower", func(ctx context.Context) error { return p.authority.FollowPolicy(ctx, policyPollInterval) })
	loop("revocation outputs", rev.run)
	loop("CA rotation", p.rotation.Run)
	for _, l := range eventLoops {
		loop(l.name, l.run)
	}
	for _, s := range servers {
		g.Go(func() error {
			if err := s.serve(); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("%s stopped: %w", s.name, err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		if ctx.Err() != nil {
			log.Info("shutting down: draining requests")
		}
		// The feed's open streams end with the hub's loop, which gctx
		// ends, so they do not hold Shutdown until its timeout.
		shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		var errs []error
		for _, s := range servers {
			if err := s.srv.Shutdown(shutCtx); err != nil {
				errs = append(errs, fmt.Errorf("graceful shutdown of the %s: %w", s.name, err))
			}
		}
		return errors.Join(errs...)
	})
	if err := g.Wait(); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// policyPollInterval is how often a server looks for a newly active
// policy version: a change reaches every server within it.
const policyPollInterval = 2 * time.Second

// orStopped names a loop that returned without an error before it was
// asked to stop.
func orStopped(err error) error {
	if err == nil {
		return errors.New("returned early")
	}
	return err
}

// namedServer is one of serve's HTTP servers, with the name its errors
// carry and how it serves on its bound listener.
type namedServer struct {
	name  string
	srv   *http.Server
	serve func() error
}

// listeners are serve's sockets; http and metrics are nil when off.
type listeners struct {
	api, http, metrics net.Listener
}

// bindListeners binds the API, CRL/OCSP and metrics addresses, or none of
// them: a taken port closes what was bound and says which flag moves it.
func bindListeners(apiAddr, httpAddr, metricsAddr string, log *slog.Logger) (_ *listeners, err error) {
	l := &listeners{}
	defer func() {
		if err != nil {
			l.close()
		}
	}()
	if l.api, err = net.Listen("tcp", apiAddr); err != nil {
		return nil, fmt.Errorf("cannot listen on %s: %w (choose another with --listen)", apiAddr, err)
	}
	if httpAddr != "off" {
		if l.http, err = net.Listen("tcp", httpAddr); err != nil {
			return nil, fmt.Errorf("cannot listen on %s for CRL and OCSP: %w (choose another with --http-listen, or off)", httpAddr, err)
		}
	}
	if !telemetry.Disabled(metricsAddr) {
		if l.metrics, err = net.Listen("tcp", metricsAddr); err != nil {
			return nil, fmt.Errorf("cannot listen on %s for metrics: %w (choose another with --metrics-listen, or off)", metricsAddr, err)
		}
		if host, _, _ := net.SplitHostPort(metricsAddr); host != "localhost" && !net.ParseIP(host).IsLoopback() {
			log.Warn("metrics are served beyond loopback", slog.String("address", metricsAddr))
		}
	}
	return l, nil
}

// boundAddr is the address asked for, with the port the listener got: the
// host stays as the operator wrote it (a name stays a name).
func boundAddr(asked string, got net.Addr) string {
	host, _, err := net.SplitHostPort(asked)
	if err != nil {
		return got.String()
	}
	return net.JoinHostPort(host, strconv.Itoa(got.(*net.TCPAddr).Port))
}

func (l *listeners) close() {
	for _, ln := range []net.Listener{l.api, l.http, l.metrics} {
		if ln != nil {
			ln.Close()
		}
	}
}

// metricsServer serves the registry at /metrics.
func metricsServer(reg *prometheus.Registry, log *slog.Logger) *http.Server {
	return &http.Server{Handler: telemetry.Handler(reg, log), ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, MaxHeaderBytes: 16 << 10,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
}

func printDevNextSteps(env *cliEnv, d dataPaths, url string) {
	fmt.Fprintf(env.stdout, `
dev mode: data in %[1]s (the CA passphrase is kept in %[2]s: fine for a first try, not for production)
next, in another terminal:
  TOKEN=$(go run ./cmd/mica token create --data-dir %[1]s --server %[3]s --identity spiffe://example.org/demo/api --profile service)
  go run ./cmd/mica cert issue --data-dir %[1]s --server %[3]s --token "$TOKEN" --out ./demo
  go run ./cmd/mica cert list --data-dir %[1]s --server %[3]s
  go run ./cmd/mica console login --data-dir %[1]s --server %[3]s   # a one-time link to the web console
`, d.dir, d.passphrase(), url)
}

func storeName(flagDB, cfgDB string) string {
	db := flagDB
	if db == "" {
		db = cfgDB
	}
	if db == "" {
		return "sqlite"
	}
	return redactURL(db)
}

func newLogger(env *cliEnv, format string) (*slog.Logger, error) {
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(env.stderr, nil)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(env.stderr, nil)), nil
	}
	return nil, usageError("--log-format must be text or json, not %q", format)
}

// newServerCertificate issues the API's own TLS certificate for the
// configured server names; Run renews it.
func newServerCertificate(ctx context.Context, p *parts, names []string, log *slog.Logger) (*servercert.Certificate, error) {
	id, err := identity.Parse(strings.Join(names, ","))
	if err != nil {
		return nil, fmt.Errorf("server_names: %w", err)
	}
	return servercert.New(ctx, servercert.Config{Issuer: p.authority, Profile: authority.ProfileServer, Identity: id, Logger: log})
}
