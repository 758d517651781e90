package agent

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/credential"
	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/testpki"
)

// fakeServer issues from a throwaway CA; it can be switched off to play an
// unreachable server.
type fakeServer struct {
	t    *testing.T
	ca   *testpki.PKI
	ttl  time.Duration
	mu   sync.Mutex
	down bool
	n    int
	// retryAfter, when set, refuses every request as rate limited.
	retryAfter time.Duration
	refused    int
	// refuse, when set, answers requests with the problem it returns
	// (nil: issue); enrolls and renews count the requests.
	refuse          func(enroll bool, token string) *client.Problem
	enrolls, renews int
}

func (f *fakeServer) counts() (enrolls, renews int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.enrolls, f.renews
}

func (f *fakeServer) setRefuse(r func(enroll bool, token string) *client.Problem) {
	f.mu.Lock()
	f.refuse = r
	f.mu.Unlock()
}

// problem is the server's answer for a slug, as the API writes it.
func problem(status int, slug string) *client.Problem {
	return &client.Problem{Type: client.ProblemTypePrefix + slug, Status: status, Detail: slug}
}

var errDown = errors.New("connection refused")

func (f *fakeServer) setDown(d bool) { f.mu.Lock(); f.down = d; f.mu.Unlock() }

func (f *fakeServer) issue(req client.CertificateRequest, enroll bool, token string) (*client.CertificateResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if enroll {
		f.enrolls++
	} else {
		f.renews++
	}
	if f.down {
		return nil, errDown
	}
	if f.refuse != nil {
		if p := f.refuse(enroll, token); p != nil {
			return nil, p
		}
	}
	if f.retryAfter > 0 {
		f.refused++
		return nil, &client.Problem{Type: client.ProblemTypePrefix + "rate-limited", Status: 429, RetryAfter: f.retryAfter}
	}
	f.n++
	blk, _ := pem.Decode([]byte(req.CSR))
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		f.t.Fatal(err)
	}
	id, _ := identity.Parse("spiffe://example.org/svc")
	now := time.Now()
	leaf, err := f.ca.Issuer.Issue(issuance.Request{PublicKey: csr.PublicKey, Identity: id, NotBefore: now, NotAfter: now.Add(f.ttl),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}})
	if err != nil {
		f.t.Fatal(err)
	}
	return &client.CertificateResponse{
		Certificate: string(credential.EncodeCertificates([]*x509.Certificate{leaf})),
		Chain:       string(credential.EncodeCertificates([]*x509.Certificate{f.ca.Intermediate})),
		Bundle:      string(credential.EncodeCertificates([]*x509.Certificate{f.ca.Root})),
		NotAfter:    leaf.NotAfter,
	}, nil
}

func (f *fakeServer) Enroll(_ context.Context, token string, req client.CertificateRequest) (*client.CertificateResponse, error) {
	return f.issue(req, true, token)
}
func (f *fakeServer) Renew(_ context.Context, req client.CertificateRequest) (*client.CertificateResponse, error) {
	return f.issue(req, false, "")
}
func (f *fakeServer) Bundle(context.Context) (*client.Bundle, error) {
	return &client.Bundle{TrustDomain: "example.org", Roots: []string{string(credential.EncodeCertificates([]*x509.Certificate{f.ca.Root}))}}, nil
}
func (f *fakeServer) JWTBundle(context.Context) ([]byte, error) { return []byte(`{"keys":[]}`), nil }
func (f *fakeServer) JWTSVID(context.Context, client.JWTSVIDRequest) (*client.JWTSVID, error) {
	return nil, errors.New("not here")
}

func TestRunRenewsAndRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &fakeServer{t: t, ca: testpki.New(t, "example.org"), ttl: time.Hour}
		reg := prometheus.NewRegistry()
		m, err := NewMetrics(reg)
		if err != nil {
			t.Fatal(err)
		}
		var hooks atomic.Int32
		a, err := New(Config{Server: srv, Token: "tok", Dir: credential.Dir{Path: filepath.Join(t.TempDir(), "cred")},
			Metrics: m, Rand: func() float64 { return 0.5 }, Hooks: []Hook{func(context.Context) error { hooks.Add(1); return nil }}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- a.Run(ctx) }()
		synctest.Wait()
		first, _ := a.State()
		if first.Credential == nil || hooks.Load() != 1 {
			t.Fatalf("after start: credential %v, hooks %d; want enrolled and one hook run", first.Credential, hooks.Load())
		}

		// At two thirds of the hour the agent renews.
		time.Sleep(40*time.Minute + time.Second)
		synctest.Wait()
		second, _ := a.State()
		if second.Credential.Chain[0].Equal(first.Credential.Chain[0]) {
			t.Fatal("no renewal at two thirds of the lifetime")
		}

		// The server goes away: the agent keeps the current credential,
		// counts failures, and warns when little life is left.
		srv.setDown(true)
		time.Sleep(52 * time.Minute)
		synctest.Wait()
		during, _ := a.State()
		if !during.Credential.Chain[0].Equal(second.Credential.Chain[0]) {
			t.Fatal("credential changed while the server was down")
		}
		if got := testutil.ToFloat64(m.failures.WithLabelValues(second.Credential.ID)); got < 3 {
			t.Errorf("failures = %v, want several retries", got)
		}
		if err := testutil.GatherAndCompare(reg, strings.NewReader(`# HELP mica_agent_certificate_expiring 1 when less than a sixth of the certificate's life is left without a renewal: alert on it.
# TYPE mica_agent_certificate_expiring gauge
mica_agent_certificate_expiring{identity="spiffe://example.org/svc"} 1
`), "mica_agent_certificate_expiring"); err != nil {
			t.Error(err)
		}

		// The server returns: the next retry renews.
		srv.setDown(false)
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		after, _ := a.State()
		if after.Credential.Chain[0].Equal(second.Credential.Chain[0]) {
			t.Fatal("no renewal after the server came back")
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run = %v", err)
		}
	})
}

func TestStartLoadsFromDisk(t *testing.T) {
	srv := &fakeServer{t: t, ca: testpki.New(t, "example.org"), ttl: time.Hour}
	dir := credential.Dir{Path: t.TempDir()}
	a, _ := New(Config{Server: srv, Token: "tok", Dir: dir})
	if err := a.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	b, _ := New(Config{Server: srv, Dir: dir}) // no token: must load
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	sa, _ := a.State()
	sb, _ := b.State()
	if !sa.Credential.Chain[0].Equal(sb.Credential.Chain[0]) || srv.n != 1 {
		t.Errorf("restarted agent did not reuse the credential on disk (issued %d)", srv.n)
	}
	c, _ := New(Config{Server: srv, Dir: credential.Dir{Path: t.TempDir()}})
	if err := c.Start(t.Context()); err == nil {
		t.Error("Start without files or token succeeded")
	}
}

// TestRetryAfterIsHonoured: a rate-limited agent comes back when the server
// said (capped by its own backoff limit), instead of retrying from one
// second up and earning a refusal each time.
func TestRetryAfterIsHonoured(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &fakeServer{t: t, ca: testpki.New(t, "example.org"), ttl: 24 * time.Hour}
		a, err := New(Config{Server: srv, Token: "tok", Dir: credential.Dir{Path: filepath.Join(t.TempDir(), "cred")},
			Rand: func() float64 { return 0.5 }, MaxBackoff: 10 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- a.Run(ctx) }()
		synctest.Wait()

		srv.mu.Lock()
		srv.retryAfter = 7 * time.Minute
		srv.mu.Unlock()
		time.Sleep(16*time.Hour + time.Second) // past the renewal time at two thirds of the day
		synctest.Wait()
		time.Sleep(20 * time.Minute)
		synctest.Wait()
		srv.mu.Lock()
		refused := srv.refused
		srv.mu.Unlock()
		// One refusal at the renewal time, then one every 7 minutes: 3 or 4
		// in 20 minutes, not the dozen a 1s-doubling backoff would make.
		if refused < 2 || refused > 4 {
			t.Errorf("%d rate-limited attempts in 20 minutes with Retry-After 7m, want 3 or 4", refused)
		}
		cancel()
		<-done
	})
}
