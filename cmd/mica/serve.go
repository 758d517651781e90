package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/api"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/feed"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/telemetry"
)

func runServe(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "serve")
	dataDir := fs.String("data-dir", envOr(env, "MICA_DATA_DIR", "mica-data"), "data directory (env MICA_DATA_DIR)")
	configPath := fs.String("config", "", "config file (default: mica.yaml in the data directory)")
	listen := fs.String("listen", "", "address to serve on (default: the config's, else "+defaultListen+")")
	httpListen := fs.String("http-listen", "", "plain-HTTP address for CRL and OCSP, or off (default: the config's, else "+defaultHTTPListen+")")
	metricsListen := fs.String("metrics-listen", "", "plain-HTTP address for Prometheus /metrics, or off (default: the config's, else "+defaultMetrics+")")
	db := fs.String("db", env.getenv("MICA_DB"), "postgres:// URL (env MICA_DB; default: the config's, else SQLite in the data directory)")
	passFile := fs.String("passphrase-file", "", "file holding the CA key passphrase (or set MICA_PASSPHRASE)")
	dev := fs.Bool("dev", false, "first try: initialise the data directory if needed (passphrase kept in it) and serve")
	logFormat := fs.String("log-format", "text", "text or json")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	tuneGC(env)
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
	p, err := openParts(ctx, d, cfg, pass, *db, log)
	if err != nil {
		return err
	}
	defer p.Close()
	if err := p.authority.RecordSystemEvent(ctx, store.ActionPolicyLoaded,
		fmt.Sprintf("config %s sha256:%s, %d profiles", *configPath, configHash(cfgData), len(cfg.Profiles))); err != nil {
		return err
	}

	// The audit loops stop with ctx and are waited for before the store
	// closes, so the last checkpoint and failure counts are written.
	var loops sync.WaitGroup
	defer loops.Wait()
	loopCtx, stopLoops := context.WithCancel(ctx)
	defer stopLoops()
	loops.Go(func() { p.audit.Run(loopCtx) })
	loops.Go(func() { p.failures.Run(loopCtx) })
	loops.Go(func() { p.guard.Run(loopCtx) })
	if err := startEventLoops(ctx, loopCtx, &loops, p, log); err != nil {
		return err
	}

	certs, err := newServerCertificate(ctx, p, cfg.ServerNames, log)
	if err != nil {
		return err
	}
	go certs.rotate(ctx)

	rev, err := newRevocationOutputs(ctx, p, log)
	if err != nil {
		return err
	}
	runCtx, stopRuns := context.WithCancelCause(ctx)
	defer stopRuns(nil)
	runs := rev.run(runCtx, stopRuns)
	defer runs.Wait()
	httpMetrics, err := telemetry.NewHTTPMetrics(p.registry)
	if err != nil {
		return err
	}
	httpSrv, httpURL, httpErr, err := serveHTTP(cfg.HTTPListen, httpMetrics.Wrap("revocation", rev.handler(p)), log)
	if err != nil {
		return err
	}
	if err := registerServerMetrics(p, rev, certs, log); err != nil {
		return err
	}
	metricsSrv, err := telemetry.Listen(cfg.metricsListen(*metricsListen), p.registry, log)
	if err != nil {
		return err
	}
	metricsErr := make(chan error, 1)
	if metricsSrv != nil {
		go func() { metricsErr <- metricsSrv.Run(runCtx) }()
	}

	started := time.Now()
	var handler http.Handler = api.New(api.Config{
		Authority: p.authority, TrustDomain: cfg.TrustDomain, Logger: log, Feed: rev.hub.Handler(), Webhooks: p.webhooks,
		Ready: func(ctx context.Context) error {
			_, err := p.store.CountCertificates(ctx, store.Filter{Limit: 1})
			return err
		},
		Stats: func() client.Stats {
			rss, peak := processMemory()
			return client.Stats{Version: version, UptimeSeconds: time.Since(started).Seconds(), PeakRSSBytes: peak, RSSBytes: rss}
		},
	})
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w (choose another with --listen)", cfg.Listen, err)
	}
	handler, door, err := withACME(p, cfg, handler, ln.Addr(), log)
	if err != nil {
		ln.Close()
		return err
	}
	if door != nil {
		loops.Go(func() { door.Run(loopCtx) })
	}
	handler, console, err := withConsole(p, cfg, handler, log)
	if err != nil {
		ln.Close()
		return err
	}
	loops.Go(func() { console.Run(loopCtx) })
	srv := &http.Server{
		Handler: traced(p, httpMetrics.Wrap("api", handler)),
		// The feed's lag counts what a subscriber has not read from its
		// connection.
		ConnContext: feed.ConnContext,
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS13,
			GetCertificate: certs.get,
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
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()

	url := "https://" + ln.Addr().String()
	log.Info("mica serving", slog.String("url", url), slog.String("data_dir", d.dir), slog.String("store", storeName(*db, cfg.Database)))
	if httpURL != "" {
		log.Info("revocation endpoints", slog.String("url", httpURL), slog.String("public_url", cfg.PublicURL))
		fmt.Fprintf(env.stdout, "revocation (CRL, OCSP) on %s (certificates name %s)\n", httpURL, cfg.PublicURL)
	}
	if metricsSrv != nil {
		log.Info("metrics", slog.String("url", "http://"+metricsSrv.Addr()+"/metrics"))
		fmt.Fprintf(env.stdout, "metrics on http://%s/metrics\n", metricsSrv.Addr())
	}
	if p.tracing.Enabled() {
		log.Info("tracing on", slog.String("otlp_endpoint", cfg.Tracing.OTLPEndpoint), slog.Float64("sample_ratio", cfg.Tracing.SampleRatio))
	}
	fmt.Fprintf(env.stdout, "mica %s serving on %s\n", version, url)
	if *dev {
		printDevNextSteps(env, d, url)
	}
	select {
	case err := <-errc:
		return fmt.Errorf("server stopped: %w", err)
	case err := <-httpErr:
		return fmt.Errorf("CRL and OCSP listener stopped: %w", err)
	case err := <-metricsErr:
		if err != nil {
			return err
		}
	case <-runCtx.Done():
		if cause := context.Cause(runCtx); ctx.Err() == nil {
			return fmt.Errorf("revocation outputs stopped: %w", cause)
		}
	}
	log.Info("shutting down: draining requests")
	// Ending the feed's loop ends its open streams, which would otherwise
	// hold Shutdown until its timeout.
	stopRuns(nil)
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if httpSrv != nil {
		httpSrv.Shutdown(shutCtx)
	}
	if err := srv.Shutdown(shutCtx); err != nil {
		return fmt.Errorf("graceful shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
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

// serverCertificate is the API's own TLS certificate, issued by mica's
// intermediate through the authority (so it is linted and recorded like any
// other) and renewed in memory at two thirds of its life.
type serverCertificate struct {
	p       *parts
	id      identity.Identity
	current atomic.Pointer[tls.Certificate]
	log     *slog.Logger
}

func newServerCertificate(ctx context.Context, p *parts, names []string, log *slog.Logger) (*serverCertificate, error) {
	id, err := identity.Parse(strings.Join(names, ","))
	if err != nil {
		return nil, fmt.Errorf("server_names: %w", err)
	}
	s := &serverCertificate{p: p, id: id, log: log}
	if err := s.renew(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *serverCertificate) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.current.Load(), nil
}

func (s *serverCertificate) renew(ctx context.Context) error {
	key, err := keys.Generate(keys.Default, rand.Reader)
	if err != nil {
		return err
	}
	iss, err := s.p.authority.IssueInternal(ctx, authority.ProfileServer, s.id, key.Public(), 0)
	if err != nil {
		return fmt.Errorf("issuing the server's own certificate: %w", err)
	}
	c := &tls.Certificate{PrivateKey: key, Leaf: iss.Certificate, Certificate: [][]byte{iss.Certificate.Raw}}
	for _, ch := range iss.Chain {
		c.Certificate = append(c.Certificate, ch.Raw)
	}
	s.current.Store(c)
	return nil
}

func (s *serverCertificate) rotate(ctx context.Context) {
	for {
		leaf := s.current.Load().Leaf
		wait := time.Until(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) * 2 / 3))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if err := s.renew(ctx); err != nil {
			s.log.Error("renewing the server certificate failed; retrying in a minute", slog.String("error", err.Error()))
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Minute):
			}
		}
	}
}

// processMemory reads this process's resident and peak resident memory
// (VmRSS, VmHWM) from /proc; zero where that is not available.
func processMemory() (rss, peak int64) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		name, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch name {
		case "VmRSS":
			rss = kb << 10
		case "VmHWM":
			peak = kb << 10
		}
	}
	return rss, peak
}
