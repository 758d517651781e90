package mtls_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/testpki"
	"github.com/mica-pki/mica/mtls"
	"github.com/mica-pki/mica/revocation"
)

const (
	serverPath = "/billing/api"
	clientPath = "/billing/worker"
)

// TestServerRejects runs one real handshake per reason a server refuses a
// client, and checks both the error and the metric.
func TestServerRejects(t *testing.T) {
	pki := testpki.New(t, "example.org")
	other := testpki.New(t, "example.org")
	now := time.Now()
	// A second trusted CA whose clock is three hours behind issues the
	// expired certificate: issuance refuses a NotAfter in its past.
	past := testpki.New(t, "example.org", testpki.WithClock(func() time.Time { return now.Add(-3 * time.Hour) }))
	server := pki.Leaf(t, pki.ID(t, serverPath))
	serverSrc := sourceOf(pki, server)
	serverSrc.roots = append(serverSrc.roots, past.Root)
	clientID := pki.ID(t, clientPath)

	tests := []struct {
		name   string
		leaf   func(t *testing.T) *testpki.Leaf // nil: no client certificate
		set    func(leaf *testpki.Leaf) *revocation.Set
		allow  string
		reason mtls.Reason
	}{
		{name: "accepted", leaf: func(t *testing.T) *testpki.Leaf { return pki.Leaf(t, clientID) }, reason: mtls.ReasonOK},
		{name: "no certificate", reason: mtls.ReasonNoCertificate},
		{name: "unknown CA", leaf: func(t *testing.T) *testpki.Leaf { return other.Leaf(t, other.ID(t, clientPath)) }, reason: mtls.ReasonUnknownCA},
		{name: "expired", leaf: func(t *testing.T) *testpki.Leaf {
			return past.Leaf(t, clientID)
		}, reason: mtls.ReasonExpired},
		{name: "not yet valid", leaf: func(t *testing.T) *testpki.Leaf {
			return pki.Leaf(t, clientID, testpki.WithValidity(now.Add(time.Hour), now.Add(2*time.Hour)))
		}, reason: mtls.ReasonNotYetValid},
		{name: "wrong EKU", leaf: func(t *testing.T) *testpki.Leaf {
			return pki.Leaf(t, clientID, testpki.WithExtKeyUsage(x509.ExtKeyUsageServerAuth))
		}, reason: mtls.ReasonWrongEKU},
		{name: "bad certificate", leaf: func(t *testing.T) *testpki.Leaf { return twoURILeaf(t, pki) }, reason: mtls.ReasonBadIdentity},
		{name: "identity not authorized", leaf: func(t *testing.T) *testpki.Leaf { return pki.Leaf(t, pki.ID(t, "/billing/intruder")) },
			reason: mtls.ReasonUnauthorized},
		{name: "revoked via feed", leaf: func(t *testing.T) *testpki.Leaf { return pki.Leaf(t, clientID) },
			set: func(l *testpki.Leaf) *revocation.Set {
				s := &revocation.Set{}
				s.Apply(revocation.Event{Seq: 1, Kind: revocation.KindRevoked, Serial: l.Cert.SerialNumber.Text(16)})
				return s
			}, reason: mtls.ReasonRevokedFeed},
		{name: "intermediate revoked via feed", leaf: func(t *testing.T) *testpki.Leaf { return pki.Leaf(t, clientID) },
			set: func(*testpki.Leaf) *revocation.Set {
				s := &revocation.Set{}
				s.Apply(revocation.Event{Seq: 1, Kind: revocation.KindRevoked, Serial: pki.Intermediate.SerialNumber.Text(16)})
				return s
			}, reason: mtls.ReasonRevokedFeed},
		{name: "identity denied", leaf: func(t *testing.T) *testpki.Leaf { return pki.Leaf(t, clientID) },
			set: func(*testpki.Leaf) *revocation.Set {
				s := &revocation.Set{}
				s.Apply(revocation.Event{Seq: 1, Kind: revocation.KindDenied, Identity: clientID.String()})
				return s
			}, reason: mtls.ReasonDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			metrics, reg := newMetrics(t)
			allow := tt.allow
			if allow == "" {
				allow = clientID.String()
			}
			opts := mtls.Options{Source: serverSrc, Authorize: mtls.AuthorizeIDs(allow), Metrics: metrics}
			clientCfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
			var leaf *testpki.Leaf
			if tt.leaf != nil {
				leaf = tt.leaf(t)
				clientCfg = mustConfig(t, mtls.ClientConfig, mtls.Options{Source: sourceOf(pki, leaf),
					Authorize: mtls.AuthorizeIDs(pki.ID(t, serverPath).String())})
			}
			if tt.set != nil {
				opts.Revocations = tt.set(leaf)
			}
			srv := serveTLS(t, mustConfig(t, mtls.ServerConfig, opts))
			_, res, clientErr := srv.dial(t, clientCfg)
			if got := rejectReason(res.err); tt.reason == mtls.ReasonOK && res.err != nil || tt.reason != mtls.ReasonOK && got != tt.reason {
				t.Fatalf("server handshake error %v (reason %q), want reason %q", res.err, got, tt.reason)
			}
			if tt.reason != mtls.ReasonOK && clientErr == nil {
				t.Error("the client was not told it was refused")
			}
			if tt.reason == mtls.ReasonOK && clientErr != nil {
				t.Errorf("client: %v", clientErr)
			}
			if n := handshakes(t, reg, "server", tt.reason); n != 1 {
				t.Errorf("mica_mtls_handshakes_total{side=server,reason=%s} = %v, want 1", tt.reason, n)
			}
			if tt.reason != mtls.ReasonOK {
				if n := handshakes(t, reg, "server", mtls.ReasonOK); n != 0 {
					t.Errorf("refused handshake also counted as accepted (%v)", n)
				}
				var rej *mtls.RejectError
				if errors.As(res.err, &rej) && tt.leaf != nil && tt.reason != mtls.ReasonBadIdentity && rej.Identity.IsZero() {
					t.Error("the RejectError does not name the peer's identity")
				}
			}
		})
	}
}

// TestClientRejects: the client judges the server by identity and usage,
// not by host name.
func TestClientRejects(t *testing.T) {
	pki := testpki.New(t, "example.org")
	other := testpki.New(t, "example.org")
	serverID := pki.ID(t, serverPath)
	client := pki.Leaf(t, pki.ID(t, clientPath))
	tests := []struct {
		name   string
		leaf   *testpki.Leaf
		allow  string
		revoke bool
		reason mtls.Reason
	}{
		{name: "accepted", leaf: pki.Leaf(t, serverID), reason: mtls.ReasonOK},
		{name: "unknown CA", leaf: other.Leaf(t, other.ID(t, serverPath)), reason: mtls.ReasonUnknownCA},
		{name: "wrong EKU", leaf: pki.Leaf(t, serverID, testpki.WithExtKeyUsage(x509.ExtKeyUsageClientAuth)), reason: mtls.ReasonWrongEKU},
		{name: "identity not authorized", leaf: pki.Leaf(t, serverID), allow: "spiffe://example.org/billing/other", reason: mtls.ReasonUnauthorized},
		{name: "revoked via feed", leaf: pki.Leaf(t, serverID), revoke: true, reason: mtls.ReasonRevokedFeed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			metrics, reg := newMetrics(t)
			allow := tt.allow
			if allow == "" {
				allow = serverID.String()
			}
			set := &revocation.Set{}
			if tt.revoke {
				set.Apply(revocation.Event{Seq: 7, Kind: revocation.KindRevoked, Serial: tt.leaf.Cert.SerialNumber.Text(16)})
			}
			srv := serveTLS(t, mustConfig(t, mtls.ServerConfig, mtls.Options{Source: staticSource{cert: ptr(tt.leaf.TLS()),
				roots: []*x509.Certificate{pki.Root}}, Authorize: mtls.AuthorizeTrustDomains("example.org")}))
			clientCfg := mustConfig(t, mtls.ClientConfig, mtls.Options{Source: sourceOf(pki, client),
				Authorize: mtls.AuthorizeIDs(allow), Revocations: set, Metrics: metrics})
			clientCfg.ServerName = "not-the-servers-name.example" // identity, not host name, decides
			_, _, err := srv.dial(t, clientCfg)
			if got := rejectReason(err); tt.reason == mtls.ReasonOK && err != nil || tt.reason != mtls.ReasonOK && got != tt.reason {
				t.Fatalf("client error %v (reason %q), want reason %q", err, got, tt.reason)
			}
			if n := handshakes(t, reg, "client", tt.reason); n != 1 {
				t.Errorf("mica_mtls_handshakes_total{side=client,reason=%s} = %v, want 1", tt.reason, n)
			}
		})
	}
}

func TestOptionsRequired(t *testing.T) {
	pki := testpki.New(t, "example.org")
	src := sourceOf(pki, pki.Leaf(t, pki.ID(t, serverPath)))
	for _, o := range []mtls.Options{{Authorize: mtls.AuthorizeTrustDomains("example.org")}, {Source: src}} {
		if _, err := mtls.ServerConfig(o); err == nil {
			t.Errorf("ServerConfig(%+v) accepted a missing required field", o)
		}
		if _, err := mtls.ClientConfig(o); err == nil {
			t.Errorf("ClientConfig(%+v) accepted a missing required field", o)
		}
	}
	cfg := mustConfig(t, mtls.ServerConfig, mtls.Options{Source: src, Authorize: mtls.AuthorizeTrustDomains("example.org")})
	if cfg.MinVersion != tls.VersionTLS13 || cfg.SessionTicketsDisabled {
		t.Errorf("MinVersion %x, tickets disabled %v: want TLS 1.3 with session tickets", cfg.MinVersion, cfg.SessionTicketsDisabled)
	}
}

// twoURILeaf is a certificate that chains to the PKI but is no X509-SVID:
// it carries two URI SANs.
func twoURILeaf(t *testing.T, p *testpki.PKI) *testpki.Leaf {
	t.Helper()
	u1, _ := url.Parse("spiffe://example.org/billing/worker")
	u2, _ := url.Parse("spiffe://example.org/billing/other")
	l := craftedLeaf(t, p, func(c *x509.Certificate) { c.URIs = []*url.URL{u1, u2} })
	if _, err := identity.FromCertificate(l.Cert); err == nil {
		t.Fatal("the two-URI certificate reads as an identity")
	}
	return l
}

// craftedLeaf signs, with the PKI's intermediate but outside mica's
// issuance (which would refuse it), a client certificate that edit
// shapes.
func craftedLeaf(t *testing.T, p *testpki.PKI, edit func(*x509.Certificate)) *testpki.Leaf {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	edit(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.Intermediate, key.Public(), p.IntermediateKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testpki.Leaf{Cert: cert, Key: key, Chain: []*x509.Certificate{p.Intermediate}}
}

// TestNamesKeepTheirKind runs real handshakes: a name in a rule matches
// only a SAN of its own kind, so a DNS SAN that reads like an IP address
// or a SPIFFE ID satisfies neither an IP nor a SPIFFE rule (and, having no
// DNS name's shape, is refused as a bad certificate).
func TestNamesKeepTheirKind(t *testing.T) {
	pki := testpki.New(t, "example.org")
	serverSrc := sourceOf(pki, pki.Leaf(t, pki.ID(t, serverPath)))
	admin, _ := url.Parse("spiffe://example.org/admin")
	leaves := map[string]*testpki.Leaf{
		"DNS SAN 127.0.0.1":                  craftedLeaf(t, pki, func(c *x509.Certificate) { c.DNSNames = []string{"127.0.0.1"} }),
		"DNS SAN spiffe://example.org/admin": craftedLeaf(t, pki, func(c *x509.Certificate) { c.DNSNames = []string{"spiffe://example.org/admin"} }),
		"IP SAN 127.0.0.1":                   craftedLeaf(t, pki, func(c *x509.Certificate) { c.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)} }),
		"URI SAN spiffe://example.org/admin": craftedLeaf(t, pki, func(c *x509.Certificate) { c.URIs = []*url.URL{admin} }),
		"DNS SAN admin.example.org":          craftedLeaf(t, pki, func(c *x509.Certificate) { c.DNSNames = []string{"admin.example.org"} }),
	}
	tests := []struct {
		rule, leaf string
		reason     mtls.Reason
	}{
		{"127.0.0.1", "IP SAN 127.0.0.1", mtls.ReasonOK},
		{"127.0.0.1", "DNS SAN 127.0.0.1", mtls.ReasonBadIdentity},
		{"127.0.0.1", "URI SAN spiffe://example.org/admin", mtls.ReasonUnauthorized},
		{"spiffe://example.org/admin", "URI SAN spiffe://example.org/admin", mtls.ReasonOK},
		{"spiffe://example.org/admin", "DNS SAN spiffe://example.org/admin", mtls.ReasonBadIdentity},
		{"spiffe://example.org/admin", "IP SAN 127.0.0.1", mtls.ReasonUnauthorized},
		{"admin.example.org", "DNS SAN admin.example.org", mtls.ReasonOK},
		{"admin.example.org", "URI SAN spiffe://example.org/admin", mtls.ReasonUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.rule+" vs "+tt.leaf, func(t *testing.T) {
			srv := serveTLS(t, mustConfig(t, mtls.ServerConfig, mtls.Options{Source: serverSrc, Authorize: mtls.AuthorizeIDs(tt.rule)}))
			clientCfg := mustConfig(t, mtls.ClientConfig, mtls.Options{Source: sourceOf(pki, leaves[tt.leaf]),
				Authorize: mtls.AuthorizeIDs(pki.ID(t, serverPath).String())})
			_, res, clientErr := srv.dial(t, clientCfg)
			if tt.reason == mtls.ReasonOK {
				if res.err != nil || clientErr != nil {
					t.Fatalf("refused: server %v, client %v", res.err, clientErr)
				}
				return
			}
			if got := rejectReason(res.err); got != tt.reason {
				t.Fatalf("server handshake error %v (reason %q), want reason %q", res.err, got, tt.reason)
			}
			if clientErr == nil {
				t.Error("the client was not told it was refused")
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// swapSource is a Source whose roots a test replaces.
type swapSource struct {
	cert  *tls.Certificate
	roots atomic.Pointer[[]*x509.Certificate]
}

func (s *swapSource) Certificate() (*tls.Certificate, error) { return s.cert, nil }
func (s *swapSource) Roots() []*x509.Certificate             { return *s.roots.Load() }

// TestVerifiedChainsRejudged: a peer whose chain verified before (and is
// remembered) is refused once its certificate expires or its root leaves
// the bundle, on new and resumed connections alike.
func TestVerifiedChainsRejudged(t *testing.T) {
	pki := testpki.New(t, "example.org")
	other := testpki.New(t, "example.org")
	client := pki.Leaf(t, pki.ID(t, clientPath), testpki.WithTTL(time.Hour))
	src := &swapSource{cert: ptr(pki.Leaf(t, pki.ID(t, serverPath), testpki.WithTTL(24*time.Hour)).TLS())}
	src.roots.Store(&[]*x509.Certificate{pki.Root})
	var skew atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	srv := serveTLS(t, mustConfig(t, mtls.ServerConfig, mtls.Options{Source: src, Now: now,
		Authorize: mtls.AuthorizeTrustDomains("example.org")}))
	for _, resume := range []bool{false, true} {
		clientCfg := mustConfig(t, mtls.ClientConfig, mtls.Options{Source: sourceOf(pki, client),
			Authorize: mtls.AuthorizeIDs("spiffe://example.org" + serverPath)})
		if !resume {
			clientCfg.ClientSessionCache = nil
		}
		skew.Store(0)
		src.roots.Store(&[]*x509.Certificate{pki.Root})
		for range 2 {
			if _, res, err := srv.dial(t, clientCfg); err != nil || res.err != nil {
				t.Fatalf("resume %v: client %v, server %v", resume, err, res.err)
			}
		}
		skew.Store(int64(2 * time.Hour))
		if _, res, _ := srv.dial(t, clientCfg); rejectReason(res.err) != mtls.ReasonExpired {
			t.Fatalf("resume %v: a remembered chain after its expiry: %v", resume, res.err)
		}
		skew.Store(0)
		if _, res, err := srv.dial(t, clientCfg); err != nil || res.err != nil {
			t.Fatalf("resume %v: back in time: client %v, server %v", resume, err, res.err)
		}
		src.roots.Store(&[]*x509.Certificate{other.Root})
		if _, res, _ := srv.dial(t, clientCfg); rejectReason(res.err) != mtls.ReasonUnknownCA {
			t.Fatalf("resume %v: a remembered chain after its root left the bundle: %v", resume, res.err)
		}
	}
}
