// Package authority is mica's core: enrollment with one-time tokens, renewal
// with the current certificate, token creation, inventory and revocation, as
// plain Go calls. Front doors (the REST API, later ACME and the agent) only
// translate to and from these calls, so every rule here binds every door.
//
// Start reading at Enroll: authenticate → decide (policy) → lint and sign
// (issuance) → record the certificate and its event in one transaction →
// return. Nothing is returned before it is durable.
package authority

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/policy"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/token"
)

// Policy decides what may be issued.
type Policy interface {
	Decide(req policy.Request) (policy.Decision, error)
}

// Issuer lints and signs a decided certificate, in two steps so that each
// can be traced: Prepare validates and lints, Sign signs what was linted.
type Issuer interface {
	Prepare(req issuance.Request) (*issuance.Prepared, error)
	Sign(p *issuance.Prepared) (*x509.Certificate, error)
}

// Store is the part of store.Store the authority uses.
type Store interface {
	RecordIssuance(ctx context.Context, iss *store.Issuance) error
	RecordEvent(ctx context.Context, ev *store.Event) error
	Revoke(ctx context.Context, serial string, reason int, at time.Time, ev *store.Event) error
	Certificate(ctx context.Context, serial string) (store.Certificate, error)
	CertificateWithoutDER(ctx context.Context, serial string) (store.Certificate, error)
	CertificateStatus(ctx context.Context, serial string) (store.CertificateStatus, error)
	ListCertificates(ctx context.Context, f store.Filter) ([]store.Certificate, error)
	CountCertificates(ctx context.Context, f store.Filter) (int, error)
	ExpiringReport(ctx context.Context, f store.ExpiringFilter) (store.ExpiringReport, error)
	// The audit log's reads (see audit.go).
	Events(ctx context.Context, f store.EventFilter) ([]store.Event, error)
	Leaves(ctx context.Context, start int64, limit int) ([]store.Event, error)
	EventBySeq(ctx context.Context, seq int64) (store.Event, error)
	Checkpoints(ctx context.Context, afterSize int64, limit int) ([]store.Checkpoint, error)
	CertificateByFingerprint(ctx context.Context, fingerprint string) (store.Certificate, error)
	CertificateByToken(ctx context.Context, jti string) (store.Certificate, error)
	RevokeIdentity(ctx context.Context, identity string, reason int, at time.Time, ev store.Event) ([]store.Event, error)
	Deny(ctx context.Context, identity string, ev *store.Event) error
	Allow(ctx context.Context, identity string, ev *store.Event) error
	IsDenied(ctx context.Context, identity string) (bool, error)
	DeniedIdentities(ctx context.Context) ([]store.Denial, error)
	// Approvals, role grants and policy versions.
	store.Governance
	// The web console's sign-in links and sessions, and its timeline.
	store.Console
	ExpiryTimeline(ctx context.Context, f store.TimelineFilter) ([]store.DayCount, error)
}

// Config wires an Authority. Every field but Clock and Logger is required.
type Config struct {
	Store  Store
	Policy Policy
	// Issuers is the CA: the issuer that signs now and the trust bundle
	// clients authenticate against (package rotation).
	Issuers Issuers
	// Minter and Tokens mint and verify enrollment tokens.
	Minter *token.Minter
	Tokens *token.Verifier
	// Access is the governance part of the policy (roles, approvals); when
	// nil, Admins with the built-in roles and no approvals.
	Access *AccessModel
	// Admins maps administrators' SPIFFE IDs to a built-in role; used
	// only when Access is nil.
	Admins map[string]Role
	// JWTKey, when set, signs JWT-SVIDs (ECDSA P-256); see MintJWTSVID.
	JWTKey crypto.Signer
	Clock  func() time.Time
	Logger *slog.Logger
	// Audit answers checkpoints and proofs; optional (audit reads of
	// checkpoints and proofs then fail as not configured).
	Audit AuditLog
	// AuthFailed, when set, is told of every failed authentication, so that
	// failures can be aggregated into the audit log without one leaf each.
	AuthFailed AuthFailedFunc
	// OnRevocation, when set, is called after a revocation or a deny list
	// change has committed, so that the revocation outputs (CRL, OCSP, push
	// feed) refresh at once instead of at their next scheduled pass. It
	// must not block.
	OnRevocation func()
	// Observer, when set, is told how every issuance and revocation ended
	// (metrics).
	Observer Observer
	// Tracer, when set, traces the issuance pipeline: one span per request
	// with authenticate, decide, lint, sign and commit as children. Unset
	// means no tracing at no cost.
	Tracer trace.Tracer
	// CompilePolicy, when set, compiles policy documents (policy versions
	// in the database); without it the policy cannot change at run time.
	CompilePolicy PolicyCompiler
	// Rotate, when set, forces CA rotation steps.
	Rotate RotateFunc
	// Guard, when set, applies rate limits and reports anomalies (package
	// limits); unset means no limits.
	Guard Guard
	// Discovery configures discovered certificates (discover.go).
	Discovery DiscoveryConfig
}

// Authority is the certificate lifecycle.
type Authority struct {
	store       Store
	issuers     Issuers
	minter      *token.Minter
	tokens      *token.Verifier
	accessModel atomic.Pointer[AccessModel]
	// policyVersion is the database version applied (0: the config's).
	policyVersion atomic.Int64
	compile       PolicyCompiler
	rotate        RotateFunc
	pol           atomic.Pointer[policyBox]
	jwt           *jwtSigner
	now           func() time.Time
	log           *slog.Logger
	audit         AuditLog
	authFailed    AuthFailedFunc
	onRevoke      func()
	observer      Observer
	tracer        trace.Tracer
	guard         Guard
	discovery     *discovery
}

// New checks cfg and returns an Authority.
func New(cfg Config) (*Authority, error) {
	switch {
	case cfg.Store == nil, cfg.Policy == nil, cfg.Issuers == nil, cfg.Minter == nil, cfg.Tokens == nil:
		return nil, errors.New("authority: Store, Policy, Issuers, Minter and Tokens are all required")
	}
	a := &Authority{
		store: cfg.Store, issuers: cfg.Issuers, minter: cfg.Minter, tokens: cfg.Tokens,
		now: cfg.Clock, log: cfg.Logger, onRevoke: cfg.OnRevocation,
		audit: cfg.Audit, authFailed: cfg.AuthFailed, observer: cfg.Observer, tracer: cfg.Tracer,
		guard: cfg.Guard, compile: cfg.CompilePolicy, rotate: cfg.Rotate,
	}
	if a.now == nil {
		a.now = time.Now
	}
	a.SetPolicy(cfg.Policy)
	if cfg.Access == nil {
		cfg.Access = DefaultAccess(cfg.Admins)
	}
	a.SetAccess(cfg.Access)
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.onRevoke == nil {
		a.onRevoke = func() {}
	}
	if a.tracer == nil {
		a.tracer = noopTracer
	}
	a.discovery = newDiscovery(a, cfg.Discovery)
	if cfg.JWTKey != nil {
		s, err := newJWTSigner(cfg.JWTKey)
		if err != nil {
			return nil, err
		}
		a.jwt = s
	}
	return a, nil
}

// policyBox lets an interface value live in an atomic.Pointer.
type policyBox struct{ Policy }

// SetPolicy replaces the policy for every request that starts from now on;
// a request in flight finishes under the policy it started with.
func (a *Authority) SetPolicy(p Policy) { a.pol.Store(&policyBox{p}) }

// SetAccess replaces the governance part (roles, approvals) the same way.
func (a *Authority) SetAccess(m *AccessModel) { a.accessModel.Store(m) }

func (a *Authority) policy() Policy       { return a.pol.Load().Policy }
func (a *Authority) access() *AccessModel { return a.accessModel.Load() }
