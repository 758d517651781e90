package authority_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
	"github.com/mica-pki/mica/internal/policy"
)

var netipLoopback = netip.MustParseAddr("127.0.0.1")

// results records what the authority tells its Observer.
type results struct {
	mu          sync.Mutex
	issuance    []authority.IssuanceResult
	revocations map[int]int
}

func (r *results) ObserveIssuance(x authority.IssuanceResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.issuance = append(r.issuance, x)
}

func (r *results) ObserveRevocations(reason, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.revocations == nil {
		r.revocations = map[int]int{}
	}
	r.revocations[reason] += n
}

func (r *results) last() authority.IssuanceResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.issuance[len(r.issuance)-1]
}

// traced is a fixture whose authority traces into memory and observes.
func traced(t *testing.T) (*authoritytest.Fixture, *tracetest.InMemoryExporter, *results) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	obs := &results{}
	f := authoritytest.NewWith(t, func(c *authority.Config) {
		c.Tracer, c.Observer = tp.Tracer("mica-test"), obs
	})
	exp.Reset() // the fixture's own admin certificate
	return f, exp, obs
}

// tree is each span's name under its parent's name, in start order.
func tree(spans tracetest.SpanStubs) map[string][]string {
	byID := map[trace.SpanID]string{}
	for _, s := range spans {
		byID[s.SpanContext.SpanID()] = s.Name
	}
	slices.SortStableFunc(spans, func(a, b tracetest.SpanStub) int { return a.StartTime.Compare(b.StartTime) })
	out := map[string][]string{}
	for _, s := range spans {
		parent := "(root)"
		if s.Parent.IsValid() {
			parent = byID[s.Parent.SpanID()]
		}
		out[parent] = append(out[parent], s.Name)
	}
	return out
}

func attr(s tracetest.SpanStub, key string) string {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value.String()
		}
	}
	return ""
}

func TestIssuanceTrace(t *testing.T) {
	f, exp, obs := traced(t)
	ctx := context.Background()
	id := "spiffe://example.org/billing/api"
	tok := f.Token(t, authority.TokenRequest{Identity: id, Profile: "service"})
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr := authoritytest.CSRWithKey(t, key)
	iss, err := f.Authority.Enroll(ctx, authority.EnrollRequest{Token: tok, CSR: csr})
	if err != nil {
		t.Fatal(err)
	}
	spans := exp.GetSpans()
	want := map[string][]string{
		"(root)":           {"authority.Enroll"},
		"authority.Enroll": {"authority.authenticate", "policy.decide", "issuance.lint", "issuance.sign", "store.commit"},
	}
	if got := tree(spans); !equalTree(got, want) {
		t.Fatalf("span tree = %v\nwant %v", got, want)
	}
	for _, s := range spans {
		if s.SpanContext.TraceID() != spans[0].SpanContext.TraceID() {
			t.Errorf("span %s is in another trace", s.Name)
		}
		if s.Name == "authority.Enroll" {
			for k, v := range map[string]string{"mica.door": "token", "mica.profile": "service", "mica.outcome": "issued", "mica.serial": iss.Record.Serial} {
				if got := attr(s, k); got != v {
					t.Errorf("request span %s = %q, want %q", k, got, v)
				}
			}
		}
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	noSecrets(t, spans, tok, string(csr), base64.StdEncoding.EncodeToString(csr), hex.EncodeToString(csr),
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})), hex.EncodeToString(keyDER), "PRIVATE KEY")
	if r := obs.last(); r.Door != policy.MethodToken || r.Profile != "service" || r.Outcome != authority.OutcomeIssued || r.Reason != "" || r.Duration <= 0 {
		t.Errorf("observed %+v, want an issued token enrollment under service", r)
	}

	// A renewal: the door authenticates first (its own span), then renews.
	exp.Reset()
	p, err := f.Authority.AuthenticateFrom(ctx, []*x509.Certificate{iss.Certificate, iss.Chain[0]}, netipLoopback)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Authority.Renew(ctx, authority.RenewRequest{Peer: p, CSR: authoritytest.CSR(t)}); err != nil {
		t.Fatal(err)
	}
	want = map[string][]string{
		"(root)":          {"authority.authenticate", "authority.Renew"},
		"authority.Renew": {"policy.decide", "issuance.lint", "issuance.sign", "store.commit"},
	}
	if got := tree(exp.GetSpans()); !equalTree(got, want) {
		t.Errorf("renewal span tree = %v\nwant %v", got, want)
	}
	if r := obs.last(); r.Door != policy.MethodRenew || r.Outcome != authority.OutcomeIssued {
		t.Errorf("observed %+v, want an issued renewal", r)
	}
}

func TestRefusalTrace(t *testing.T) {
	f, exp, obs := traced(t)
	ctx := context.Background()
	tests := []struct {
		name, reason string
		spans        []string
		req          func() authority.EnrollRequest
	}{
		{"BadToken", "token-invalid", []string{"authority.authenticate"}, func() authority.EnrollRequest {
			return authority.EnrollRequest{Token: "not.a.token", CSR: authoritytest.CSR(t)}
		}},
		{"IdentityMismatch", "identity-mismatch", []string{"authority.authenticate"}, func() authority.EnrollRequest {
			tok := f.Token(t, authority.TokenRequest{Identity: "spiffe://example.org/billing/a", Profile: "service"})
			return authority.EnrollRequest{Token: tok, CSR: authoritytest.CSR(t, "spiffe://example.org/billing/b")}
		}},
		{"TTLTooLong", "ttl-too-long", []string{"authority.authenticate", "policy.decide"}, func() authority.EnrollRequest {
			tok := f.Token(t, authority.TokenRequest{Identity: "spiffe://example.org/billing/c", Profile: "service"})
			return authority.EnrollRequest{Token: tok, CSR: authoritytest.CSR(t), TTL: 1000 * time.Hour}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := tc.req()
			exp.Reset()
			if _, err := f.Authority.Enroll(ctx, req); err == nil {
				t.Fatal("enrollment succeeded, want a refusal")
			}
			spans := exp.GetSpans()
			want := map[string][]string{"(root)": {"authority.Enroll"}, "authority.Enroll": tc.spans}
			if got := tree(spans); !equalTree(got, want) {
				t.Errorf("span tree = %v\nwant %v", got, want)
			}
			for _, s := range spans {
				if s.Name == "authority.Enroll" && (attr(s, "mica.outcome") != "refused" || attr(s, "mica.reason") != tc.reason) {
					t.Errorf("request span says outcome %q reason %q, want refused %s", attr(s, "mica.outcome"), attr(s, "mica.reason"), tc.reason)
				}
			}
			noSecrets(t, spans, req.Token)
			if r := obs.last(); r.Outcome != authority.OutcomeRefused || r.Reason != tc.reason {
				t.Errorf("observed %+v, want refused with %s", r, tc.reason)
			}
		})
	}
}

func TestObserveRevocations(t *testing.T) {
	f, _, obs := traced(t)
	ctx := context.Background()
	a := f.Issue(t, "spiffe://example.org/billing/x")
	f.Issue(t, "spiffe://example.org/billing/y")
	f.Issue(t, "spiffe://example.org/billing/y")
	if _, err := f.Authority.Revoke(ctx, f.Admin, a.Record.Serial, 1, netipLoopback); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Authority.RevokeIdentity(ctx, f.Admin, "spiffe://example.org/billing/y", 4, netipLoopback); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Authority.Revoke(ctx, f.Admin, a.Record.Serial, 1, netipLoopback); err == nil {
		t.Fatal("revoking twice succeeded")
	}
	if got := obs.revocations; got[1] != 1 || got[4] != 2 || len(got) != 2 {
		t.Errorf("observed revocations %v, want 1 keyCompromise and 2 superseded", got)
	}
}

func equalTree(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// noSecrets fails if any span's name, attribute or event carries one of
// secrets.
func noSecrets(t *testing.T, spans tracetest.SpanStubs, secrets ...string) {
	t.Helper()
	for _, s := range spans {
		texts := []string{s.Name, s.Status.Description}
		for _, kv := range s.Attributes {
			texts = append(texts, string(kv.Key), kv.Value.String())
		}
		for _, e := range s.Events {
			texts = append(texts, e.Name)
			for _, kv := range e.Attributes {
				texts = append(texts, kv.Value.String())
			}
		}
		for _, text := range texts {
			for _, secret := range secrets {
				if secret != "" && len(text) > 0 && strings.Contains(text, secret) {
					t.Errorf("span %s carries a secret: %q", s.Name, text)
				}
			}
		}
	}
}
