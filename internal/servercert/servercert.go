// Package servercert keeps mica's own TLS server certificate: issued by the
// authority under a reserved profile (so it is linted, recorded and audited
// like any other certificate), held in memory with its key, and renewed on
// the one renewal schedule of package renewal, with capped backoff while
// issuance fails.
//
// Start with New, then run Run next to the server and hand GetCertificate
// to its tls.Config.
package servercert

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/renewal"
)

// Issuer issues a certificate for mica's own use (authority.IssueInternal).
type Issuer interface {
	IssueInternal(ctx context.Context, profile string, id identity.Identity, pub crypto.PublicKey, ttl time.Duration) (*authority.Issued, error)
}

// Config says what to issue and how.
type Config struct {
	Issuer Issuer
	// Profile is the reserved profile the certificate is issued under; its
	// TTL is the certificate's.
	Profile string
	// Identity is the names the certificate carries (DNS names and IPs).
	Identity identity.Identity
	// Rand returns numbers in [0, 1) for the renewal jitter and the retry
	// backoff; default math/rand/v2.
	Rand func() float64
	// MaxRetry caps the wait between failed renewals; default 5 minutes
	// (and never more than a twelfth of the lifetime, see renewal.RetryCap).
	MaxRetry time.Duration
	Logger   *slog.Logger
}

// Certificate is the current server certificate. Its methods are safe for
// concurrent use.
type Certificate struct {
	cfg     Config
	current atomic.Pointer[tls.Certificate]
}

// New issues the first certificate; an error means the server cannot
// start.
func New(ctx context.Context, cfg Config) (*Certificate, error) {
	if cfg.Issuer == nil || cfg.Profile == "" || cfg.Identity.IsZero() {
		return nil, errors.New("servercert: Config needs Issuer, Profile and Identity")
	}
	if cfg.Rand == nil {
		cfg.Rand = mrand.Float64
	}
	if cfg.MaxRetry <= 0 {
		cfg.MaxRetry = 5 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Certificate{cfg: cfg}
	if err := c.renew(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (c *Certificate) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.current.Load(), nil
}

// Leaf is the current certificate.
func (c *Certificate) Leaf() *x509.Certificate { return c.current.Load().Leaf }

// Follow renews the certificate now when the intermediate that signs (its
// subject key identifier) is not the one that signed it: after a CA
// rotation the server presents the active intermediate's chain. The
// renewal schedule goes on as before.
func (c *Certificate) Follow(ctx context.Context, signer []byte) error {
	if bytes.Equal(c.Leaf().AuthorityKeyId, signer) {
		return nil
	}
	return c.renew(ctx)
}

// renew issues a certificate for a new key and makes it current.
func (c *Certificate) renew(ctx context.Context) error {
	key, err := keys.Generate(keys.Default, rand.Reader)
	if err != nil {
		return err
	}
	iss, err := c.cfg.Issuer.IssueInternal(ctx, c.cfg.Profile, c.cfg.Identity, key.Public(), 0)
	if err != nil {
		return fmt.Errorf("servercert: issuing the server's own certificate: %w", err)
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: iss.Certificate, Certificate: [][]byte{iss.Certificate.Raw}}
	for _, ch := range iss.Chain {
		tc.Certificate = append(tc.Certificate, ch.Raw)
	}
	c.current.Store(tc)
	return nil
}

// Run renews the certificate on the renewal schedule until ctx ends; a
// failed renewal is logged and retried with capped, jittered backoff while
// the current certificate keeps being served. It returns nil when ctx ends.
func (c *Certificate) Run(ctx context.Context) error {
	for {
		leaf := c.Leaf()
		if !sleep(ctx, time.Until(renewal.RenewAt(leaf.NotBefore, leaf.NotAfter, c.cfg.Rand()))) {
			return nil
		}
		limit := renewal.RetryCap(leaf.NotAfter.Sub(leaf.NotBefore), c.cfg.MaxRetry)
		for attempt := 0; ; attempt++ {
			err := c.renew(ctx)
			if err == nil {
				break
			}
			wait := renewal.Backoff(attempt, time.Second, limit, c.cfg.Rand())
			c.cfg.Logger.LogAttrs(ctx, slog.LevelError, "renewing the server certificate failed; the current one is served until it expires",
				slog.String("error", err.Error()), slog.Duration("retry_in", wait), slog.Time("not_after", leaf.NotAfter))
			if !sleep(ctx, wait) {
				return nil
			}
		}
	}
}

// sleep waits d, or less if ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
