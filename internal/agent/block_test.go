package agent

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/credential"
	"github.com/mica-pki/mica/internal/testpki"
)

func TestBlockOf(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		enrolling bool
		want      Block
	}{
		{"no connection", errDown, false, ""},
		{"rate limited", problem(http.StatusTooManyRequests, "rate-limited"), false, ""},
		{"renewal storm", problem(http.StatusTooManyRequests, "renewal-storm"), false, ""},
		{"server fault", problem(http.StatusInternalServerError, "internal"), false, ""},
		{"expired", problem(http.StatusUnauthorized, "certificate-expired"), false, BlockExpired},
		{"revoked", problem(http.StatusForbidden, "certificate-revoked"), false, BlockRevoked},
		{"unknown to the server", problem(http.StatusUnauthorized, "unauthenticated"), false, BlockUnknown},
		{"deny list", problem(http.StatusForbidden, "identity-denied"), false, BlockDenied},
		{"deny list at enrollment", problem(http.StatusForbidden, "identity-denied"), true, BlockDenied},
		{"policy", problem(http.StatusForbidden, "ttl-too-long"), false, BlockRefused},
		{"renewal chain ended", problem(http.StatusForbidden, "renewal-chain-ended"), false, BlockChainEnded},
		{"token used", problem(http.StatusForbidden, "token-replayed"), true, BlockToken},
		{"token expired", problem(http.StatusUnauthorized, "token-expired"), true, BlockToken},
		{"token invalid", problem(http.StatusUnauthorized, "token-invalid"), true, BlockToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := blockOf(tt.err, tt.enrolling); got != tt.want {
				t.Errorf("blockOf = %q, want %q", got, tt.want)
			}
		})
	}
}

// syncBuf is a log sink for the tests.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// blockedAgent runs an agent with a token file against srv inside a
// synctest bubble and returns it after its enrollment.
type blockedAgent struct {
	*Agent
	srv       *fakeServer
	tokenFile string
	logs      *syncBuf
	reg       *prometheus.Registry
	m         *Metrics
}

func runBlockable(t *testing.T, ttl time.Duration) (*blockedAgent, func()) {
	t.Helper()
	dir := t.TempDir()
	b := &blockedAgent{srv: &fakeServer{t: t, ca: testpki.New(t, "example.org"), ttl: ttl},
		tokenFile: filepath.Join(dir, "token"), logs: &syncBuf{}, reg: prometheus.NewRegistry()}
	if err := os.WriteFile(b.tokenFile, []byte("first-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var err error
	if b.m, err = NewMetrics(b.reg); err != nil {
		t.Fatal(err)
	}
	b.Agent, err = New(Config{Server: b.srv, TokenFile: b.tokenFile, Dir: credential.Dir{Path: filepath.Join(dir, "cred")},
		Rand: func() float64 { return 0.5 }, Metrics: b.m, Logger: slog.New(slog.NewTextHandler(b.logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- b.Run(ctx) }()
	synctest.Wait()
	if s, _ := b.State(); s.Credential == nil {
		t.Fatalf("not enrolled:\n%s", b.logs)
	}
	return b, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}
}

func (b *blockedAgent) writeToken(t *testing.T, tok string) {
	t.Helper()
	if err := os.WriteFile(b.tokenFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (b *blockedAgent) blocked(t *testing.T, reason Block) float64 {
	t.Helper()
	s, _ := b.State()
	id := b.cfg.Dir.Path
	if s.Credential != nil {
		id = s.Credential.ID
	}
	mfs, err := b.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "mica_agent_blocked" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["identity"] == id && labels["reason"] == string(reason) {
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no mica_agent_blocked{identity=%q,reason=%q}", id, reason)
	return -1
}

// TestRevokedWaitsForAToken: a revoked certificate blocks the agent at the
// next renewal; it says what to do, sets the metric, asks the server no
// more (not in a day), and recovers from a new token in its file.
func TestRevokedWaitsForAToken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, stop := runBlockable(t, time.Hour)
		defer stop()
		b.srv.setRefuse(func(enroll bool, _ string) *client.Problem {
			if enroll {
				return problem(http.StatusForbidden, "token-replayed")
			}
			return problem(http.StatusForbidden, "certificate-revoked")
		})
		time.Sleep(41 * time.Minute) // past the renewal time
		synctest.Wait()
		if s, _ := b.State(); s.Blocked != BlockRevoked {
			t.Fatalf("Blocked = %q, want revoked:\n%s", s.Blocked, b.logs)
		}
		if l := b.logs.String(); !strings.Contains(l, "RENEWAL BLOCKED") || !strings.Contains(l, "was revoked") ||
			!strings.Contains(l, "write a new token to "+b.tokenFile) {
			t.Errorf("the log does not say what to do:\n%s", l)
		}
		if v := b.blocked(t, BlockRevoked); v != 1 {
			t.Errorf("mica_agent_blocked{reason=revoked} = %v, want 1", v)
		}
		enrolls, renews := b.srv.counts()
		time.Sleep(24 * time.Hour)
		synctest.Wait()
		if e2, r2 := b.srv.counts(); e2 != enrolls || r2 != renews {
			t.Fatalf("a revoked agent asked the server %d more times in a day with no new token", e2+r2-enrolls-renews)
		}
		if n := strings.Count(b.logs.String(), "RENEWAL BLOCKED"); n != 1 {
			t.Errorf("the block was logged %d times, want once", n)
		}

		// A token that does not work is said so, and not tried again.
		b.writeToken(t, "used-token")
		time.Sleep(11 * time.Second)
		synctest.Wait()
		if !strings.Contains(b.logs.String(), "the new token cannot be used") {
			t.Errorf("a refused token was not reported:\n%s", b.logs)
		}
		time.Sleep(time.Hour)
		synctest.Wait()
		if e3, _ := b.srv.counts(); e3 != enrolls+1 {
			t.Errorf("the refused token was tried %d times, want once", e3-enrolls)
		}

		b.srv.setRefuse(nil)
		b.writeToken(t, "fresh-token")
		time.Sleep(11 * time.Second)
		synctest.Wait()
		s, _ := b.State()
		if s.Blocked != "" || s.Credential == nil || time.Now().After(s.Credential.Leaf().NotAfter) {
			t.Fatalf("not recovered by a new token: blocked %q", s.Blocked)
		}
		if v := b.blocked(t, BlockRevoked); v != 0 {
			t.Errorf("mica_agent_blocked{reason=revoked} = %v after recovery, want 0", v)
		}
	})
}

// TestDeniedRetriesSlowly: a denied identity is asked about at the longest
// backoff only, and renews once an admin allows it again.
func TestDeniedRetriesSlowly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, stop := runBlockable(t, time.Hour)
		defer stop()
		b.srv.setRefuse(func(bool, string) *client.Problem { return problem(http.StatusForbidden, "identity-denied") })
		time.Sleep(41 * time.Minute)
		synctest.Wait()
		if s, _ := b.State(); s.Blocked != BlockDenied {
			t.Fatalf("Blocked = %q, want denied", s.Blocked)
		}
		if !strings.Contains(b.logs.String(), "mica identity allow spiffe://example.org/svc") {
			t.Errorf("the log does not say how to lift the block:\n%s", b.logs)
		}
		_, before := b.srv.counts()
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		// The longest backoff of a one-hour certificate is five minutes.
		if _, after := b.srv.counts(); after-before > 2 {
			t.Fatalf("%d renewal attempts in 10 minutes while denied, want at most 2", after-before)
		}
		b.srv.setRefuse(nil)
		time.Sleep(5*time.Minute + time.Second)
		synctest.Wait()
		if s, _ := b.State(); s.Blocked != "" || s.LastRenewal.IsZero() || time.Since(s.LastRenewal) > 6*time.Minute {
			t.Fatalf("not renewed after the identity was allowed: blocked %q", s.Blocked)
		}
	})
}

// TestExpiredDuringOutage: the server is away until the certificate
// expires; the agent then stops asking, says it needs a token, and enrolls
// again from its token file once the server is back.
func TestExpiredDuringOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, stop := runBlockable(t, time.Hour)
		defer stop()
		b.srv.setDown(true)
		time.Sleep(61 * time.Minute)
		synctest.Wait()
		if s, _ := b.State(); s.Blocked != BlockExpired {
			t.Fatalf("Blocked = %q after expiry, want expired:\n%s", s.Blocked, b.logs)
		}
		if v := b.blocked(t, BlockExpired); v != 1 {
			t.Errorf("mica_agent_blocked{reason=expired} = %v, want 1", v)
		}
		b.srv.setDown(false)
		_, renews := b.srv.counts()
		time.Sleep(6 * time.Hour)
		synctest.Wait()
		if _, r := b.srv.counts(); r != renews {
			t.Fatalf("an expired certificate was offered for renewal %d times", r-renews)
		}
		b.writeToken(t, "fresh-token")
		b.RenewNow() // as SIGUSR1: read the token file now
		synctest.Wait()
		if s, _ := b.State(); s.Blocked != "" || !time.Now().Before(s.Credential.Leaf().NotAfter) {
			t.Fatalf("not recovered: blocked %q", s.Blocked)
		}
	})
}

// TestStartBlocked: an agent restarted with an expired credential and a
// spent token in its token file starts blocked instead of exiting, and
// recovers from a new token; without a token file it fails, saying what
// to do.
func TestStartBlocked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, stop := runBlockable(t, time.Hour)
		stop()
		b.srv.setRefuse(func(enroll bool, tok string) *client.Problem {
			if tok == "first-token" {
				return problem(http.StatusForbidden, "token-replayed")
			}
			return nil
		})
		time.Sleep(2 * time.Hour)

		noFile, _ := New(Config{Server: b.srv, Token: "first-token", Dir: b.cfg.Dir})
		if err := noFile.Start(t.Context()); err == nil || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("Start with an expired credential and a spent --token: %v, want an error saying it expired", err)
		}

		again, err := New(Config{Server: b.srv, TokenFile: b.tokenFile, Dir: b.cfg.Dir})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- again.Run(ctx) }()
		synctest.Wait()
		if s, _ := again.State(); s.Blocked != BlockExpired {
			t.Fatalf("restarted agent: Blocked = %q, want expired", s.Blocked)
		}
		b.writeToken(t, "second-token")
		time.Sleep(11 * time.Second)
		synctest.Wait()
		if s, _ := again.State(); s.Blocked != "" || !time.Now().Before(s.Credential.Leaf().NotAfter) {
			t.Fatalf("restarted agent not recovered: blocked %q", s.Blocked)
		}
		cancel()
		<-done
	})
}

// TestRenewNow: a kick renews at once, far from the renewal time.
func TestRenewNow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, stop := runBlockable(t, 24*time.Hour)
		defer stop()
		first, _ := b.State()
		b.RenewNow()
		synctest.Wait()
		if s, _ := b.State(); s.Credential.Leaf().Equal(first.Credential.Leaf()) {
			t.Fatal("RenewNow did not renew")
		}
	})
}
