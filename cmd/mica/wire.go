package main

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mica-pki/mica/internal/api"
	"github.com/mica-pki/mica/internal/auditlog"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/ca"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/keys/custody"
	"github.com/mica-pki/mica/internal/keys/file"
	"github.com/mica-pki/mica/internal/limits"
	"github.com/mica-pki/mica/internal/ratelimit"
	"github.com/mica-pki/mica/internal/ratelimit/pgbuckets"
	"github.com/mica-pki/mica/internal/rotation"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/postgres"
	"github.com/mica-pki/mica/internal/store/sqlite"
	"github.com/mica-pki/mica/internal/telemetry"
	"github.com/mica-pki/mica/internal/token"
)

// parts are the wired pieces of a running authority.
type parts struct {
	cfg       *Config
	hierarchy *ca.Hierarchy
	// caKeys holds the CA keys (sealed files or a PKCS#11 token).
	caKeys custody.Keys
	// rotation is the CA as it rotates: the authority's signing CA and
	// trust bundle; caChanged relays its steps to the consumers serve
	// wires after it (CRLs, OCSP, the server's certificate).
	rotation  *rotation.Manager
	caChanged *relay
	store     store.Store
	authority *authority.Authority
	minter    *token.Minter
	audit     *auditlog.Log
	failures  *auditlog.Throttle // failed authentications
	// guard enforces the rate limits and reports anomalies; its Run
	// writes the throttled events' summaries.
	guard *limits.Guard
	// sharedLimits keeps rate-limit buckets in PostgreSQL so that limits
	// hold across replicas; nil on SQLite (one server, buckets in memory).
	sharedLimits *pgbuckets.Backend
	// revocations relays the authority's "a revocation committed" to the
	// revocation outputs, which serve wires after the authority exists.
	revocations *relay
	data        dataPaths
	// registry holds this process's metrics; tracing is off unless the
	// config names an OTLP endpoint.
	registry *prometheus.Registry
	tracing  *telemetry.Tracing
	// webhooks are the configured webhook endpoints as the API shows
	// them; set by serve.
	webhooks []api.WebhookEndpoint
}

// Close flushes buffered spans, then closes the store.
func (p *parts) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.tracing.Shutdown(ctx)
	if p.sharedLimits != nil {
		p.sharedLimits.Close()
	}
	defer p.caKeys.Close()
	return p.store.Close()
}

// rateLimitBackend is where the limits' buckets are shared, nil when they
// are this process's.
func (p *parts) rateLimitBackend() ratelimit.Backend {
	if p.sharedLimits == nil {
		return nil
	}
	return p.sharedLimits
}

// relay is a hook set after construction: the authority needs it at New,
// the feed that answers it is made later, and only by serve.
type relay struct{ fn atomic.Pointer[func()] }

func (r *relay) set(fn func()) { r.fn.Store(&fn) }

func (r *relay) fire() {
	if fn := r.fn.Load(); fn != nil {
		(*fn)()
	}
}

// openStore opens the configured engine: PostgreSQL for a postgres:// URL,
// otherwise the embedded SQLite file in the data directory.
func openStore(ctx context.Context, dbURL string, d dataPaths) (store.Store, error) {
	switch {
	case isPostgres(dbURL):
		return postgres.Open(ctx, dbURL)
	case dbURL == "", strings.HasPrefix(dbURL, "sqlite:"):
		path := strings.TrimPrefix(dbURL, "sqlite:")
		if path == "" {
			path = d.database()
		}
		return sqlite.Open(ctx, path)
	}
	return nil, usageError("--db %q: use a postgres:// URL, or leave it empty for the embedded SQLite store", redactURL(dbURL))
}

func isPostgres(dbURL string) bool {
	return strings.HasPrefix(dbURL, "postgres://") || strings.HasPrefix(dbURL, "postgresql://")
}

// redactURL hides a password in a database URL before it is printed.
func redactURL(u string) string {
	if at := strings.LastIndex(u, "@"); at > 0 {
		if scheme := strings.Index(u, "://"); scheme > 0 && scheme < at {
			creds := u[scheme+3 : at]
			if user, _, ok := strings.Cut(creds, ":"); ok {
				return u[:scheme+3] + user + ":***" + u[at:]
			}
		}
	}
	return u
}

// openOptions are what openParts needs besides the data directory, the
// config and the passphrase.
type openOptions struct {
	// dbURL overrides the config's database (--db, MICA_DB).
	dbURL string
	// create lets an empty database be bound to this CA (init); serve
	// refuses a database that holds nothing of its CA.
	create bool
	log    *slog.Logger
	// registry receives the metrics; nil makes one.
	registry *prometheus.Registry
}

// openParts loads the CA, token key, policy and store and wires the
// authority. The store is checked to belong to this data directory's CA
// before anything is created or written.
func openParts(ctx context.Context, d dataPaths, cfg *Config, passphrase []byte, o openOptions) (_ *parts, err error) {
	log := o.log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	caKeys, err := openKeys(&cliEnv{getenv: os.Getenv}, cfg.Keys, passphrase)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			caKeys.Close()
		}
	}()
	// The data directory's CA certificates, without their keys: the CA
	// slots hold the keys once the database serves this CA.
	hier, err := ca.LoadCertificates(d.caDir())
	if err != nil {
		if errors.Is(err, ca.ErrNotInitialized) {
			return nil, fmt.Errorf("%s: %w: run `mica init --data-dir %s` (or `mica serve --dev`)", d.dir, errNotInitialised, d.dir)
		}
		return nil, err
	}
	edKey, err := loadTokenKey(d, passphrase)
	if err != nil {
		return nil, err
	}
	minter, err := token.NewMinter(edKey)
	if err != nil {
		return nil, err
	}
	eng := cfg.engine()
	for _, name := range eng.Profiles() {
		info, _ := eng.Profile(name)
		for _, c := range info.CoversReserved {
			log.Info("a profile pattern covers one of the server's own names, which it will never issue", "profile", name, "pattern", c)
		}
	}
	if cfg.PublicURL == "" {
		if err := cfg.settlePublicURL("", cfg.HTTPListen); err != nil {
			return nil, err
		}
	}
	dbURL := o.dbURL
	if dbURL == "" {
		dbURL = cfg.Database
	}
	st, err := openStore(ctx, dbURL, d)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			st.Close()
		}
	}()
	if err := st.BindCA(ctx, store.CABinding{Root: authority.Fingerprint(hier.Root.Raw),
		Issuer: authority.Fingerprint(hier.Intermediate.Raw), Create: o.create}); err != nil {
		return nil, foreignDatabase(err, d, dbURL)
	}
	jwtKey, err := loadOrCreateJWTKey(d, passphrase)
	if err != nil {
		return nil, err
	}
	auditKey, err := auditSigner(d, passphrase, caKeys)
	if err != nil {
		return nil, err
	}
	signer, err := auditlog.NewSigner(auditOrigin(cfg.TrustDomain), auditKey)
	if err != nil {
		return nil, err
	}
	alog, err := auditlog.New(auditlog.Config{Store: st, Signer: signer, Logger: log})
	if err != nil {
		return nil, err
	}
	failures := auditlog.NewThrottle(st, nil, log)
	reg := o.registry
	if reg == nil {
		reg = telemetry.NewRegistry(version)
	}
	metrics, err := telemetry.NewIssuanceMetrics(reg, cfg.profileNames())
	if err != nil {
		return nil, err
	}
	tracing, err := telemetry.NewTracing(ctx, cfg.Tracing, "mica", version)
	if err != nil {
		return nil, err
	}
	// With PostgreSQL several replicas may serve: their rate limits share
	// buckets in the database (one statement per request, no fsync).
	var shared *pgbuckets.Backend
	var sharedBackend ratelimit.Backend
	if isPostgres(dbURL) {
		if shared, err = pgbuckets.Open(ctx, dbURL); err == nil {
			err = shared.Check(ctx)
		}
		if err != nil {
			return nil, err
		}
		sharedBackend = shared
		defer func() {
			if err != nil {
				shared.Close()
			}
		}()
	}
	guard, err := limits.New(limits.Config{Rules: cfg.rules, Recorder: st, Registerer: reg, Logger: log, Shared: sharedBackend})
	if err != nil {
		return nil, err
	}
	disc, err := cfg.discoveryConfig()
	if err != nil {
		return nil, err
	}
	caChanged := &relay{}
	mgr, err := openRotation(ctx, d, cfg, hier, st, caKeys, eng, log, caChanged.fire)
	if err != nil {
		return nil, err
	}
	rel := &relay{}
	auth, err := authority.New(authority.Config{
		Observer: metrics, Tracer: tracing.Tracer("github.com/mica-pki/mica/internal/authority"),
		OnRevocation: rel.fire,
		Store:        st, Policy: eng, Issuers: mgr, Rotate: mgr.Force, Minter: minter,
		Tokens: token.NewVerifier(edKey.Public().(ed25519.PublicKey)),
		Access: cfg.policy.Access, CompilePolicy: authority.DocumentCompiler(cfg.TrustDomain, cfg.ServerNames),
		Logger: log, JWTKey: jwtKey,
		Audit: alog, AuthFailed: func(source netip.Addr, reason string) {
			failures.AuthFailed(source, reason)
			metrics.AuthFailed(source, reason)
		},
		Guard:     guard,
		Discovery: disc,
	})
	if err != nil {
		return nil, err
	}
	return &parts{cfg: cfg, hierarchy: hier, caKeys: caKeys, rotation: mgr, caChanged: caChanged, store: st, authority: auth, minter: minter, revocations: rel, data: d,
		audit: alog, failures: failures, guard: guard, sharedLimits: shared, registry: reg, tracing: tracing}, nil
}

// foreignDatabase explains a database that is not this CA's, and what to
// do about it.
func foreignDatabase(err error, d dataPaths, dbURL string) error {
	where := "the SQLite database " + d.database()
	if dbURL != "" {
		where = "the database " + redactURL(dbURL)
	}
	var foreign *store.ForeignCAError
	switch {
	case errors.As(err, &foreign):
		return fmt.Errorf("%s belongs to another CA, not to the one in %s (root sha256 %s): "+
			"give this CA the database it was initialised with (database: in %s, or --db), "+
			"or give a new CA an empty database: %w", where, d.dir, foreign.Want, d.config(), err)
	case errors.Is(err, store.ErrNoCA):
		return fmt.Errorf("%s holds nothing of the CA in %s: its certificates, admins and audit log are in the database "+
			"it was initialised with (database: in %s); serve that one, or make a new CA on this database with "+
			"`mica init --data-dir NEW-DIR --db …`: %w", where, d.dir, d.config(), err)
	}
	return err
}

// loadTokenKey reads the Ed25519 key that signs enrollment tokens.
func loadTokenKey(d dataPaths, passphrase []byte) (ed25519.PrivateKey, error) {
	k, err := file.Load(d.tokenKey(), passphrase)
	if err != nil {
		return nil, err
	}
	ed, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s is not an Ed25519 key; token keys are Ed25519", d.tokenKey())
	}
	return ed, nil
}

// loadOrCreateJWTKey reads the ECDSA P-256 key that signs JWT-SVIDs,
// creating it on first use so that data directories made before JWT-SVIDs
// existed gain one on their next start.
func loadOrCreateJWTKey(d dataPaths, passphrase []byte) (crypto.Signer, error) {
	k, _, err := file.LoadOrCreate(d.jwtKey(), passphrase, keys.ECDSAP256)
	return k, err
}

// auditOrigin names the audit log in its checkpoints and its key.
func auditOrigin(trustDomain string) string { return trustDomain + "/mica/audit" }

// loadOrCreateAuditKey loads the Ed25519 key that signs audit checkpoints,
// creating it in a data directory made before the audit log existed.
func loadOrCreateAuditKey(d dataPaths, passphrase []byte) (ed25519.PrivateKey, error) {
	k, _, err := file.LoadOrCreate(d.auditKey(), passphrase, keys.Ed25519)
	if err != nil {
		return nil, err
	}
	return k.(ed25519.PrivateKey), nil
}

// readPassphrase finds the CA passphrase: --passphrase-file, then the
// MICA_PASSPHRASE environment variable, then (for --dev data directories
// only) the passphrase file inside the data directory.
func readPassphrase(env *cliEnv, flagFile string, d dataPaths) ([]byte, error) {
	if flagFile == "" && env.getenv(passphraseEnv) == "" && fileExists(d.passphrase()) {
		flagFile = d.passphrase()
	}
	if flagFile == "" && env.getenv(passphraseEnv) == "" {
		return nil, errors.New("the CA keys are encrypted: pass --passphrase-file FILE or set MICA_PASSPHRASE")
	}
	if flagFile != "" {
		return file.Passphrase(flagFile, "")
	}
	return []byte(env.getenv(passphraseEnv)), nil
}

// configHash names a config version in audit events without copying it.
func configHash(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}
