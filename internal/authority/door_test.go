package authority_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"net/netip"
	"testing"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
	"github.com/mica-pki/mica/internal/limits"
	"github.com/mica-pki/mica/internal/policy"
	"github.com/mica-pki/mica/internal/store"
)

// doorsFixture is an authority with the real guard (package limits), one
// request an hour per source under profile "wide", and a way at each of
// the three doors to ask for a certificate for a name.
type doorsFixture struct {
	*authoritytest.Fixture
	acmeKey crypto.Signer
	// next hands out sources, so that setting a door up spends nothing of
	// the source limit the test measures.
	next netip.Addr
}

// door prepares a request for name at one door (before the rule under
// test changes anything) and returns the request, to run afterwards.
type door struct {
	name    string
	prepare func(t *testing.T, f *doorsFixture, name string) func(src netip.Addr) (*authority.Issued, error)
}

var doors = []door{
	{"enroll", func(t *testing.T, f *doorsFixture, name string) func(netip.Addr) (*authority.Issued, error) {
		// A token per request (each works once), made before the rule
		// under test changes.
		var tokens []string
		for range 2 {
			tokens = append(tokens, f.Token(t, authority.TokenRequest{Identity: name, Profile: "wide"}))
		}
		return func(src netip.Addr) (*authority.Issued, error) {
			tok := tokens[0]
			tokens = tokens[1:]
			return f.Authority.Enroll(context.Background(), authority.EnrollRequest{Token: tok, CSR: authoritytest.CSR(t), Source: src})
		}
	}},
	{"renew", func(t *testing.T, f *doorsFixture, name string) func(netip.Addr) (*authority.Issued, error) {
		tok := f.Token(t, authority.TokenRequest{Identity: name, Profile: "wide"})
		iss, err := f.Authority.Enroll(context.Background(), authority.EnrollRequest{Token: tok, CSR: authoritytest.CSR(t), Source: f.source()})
		if err != nil {
			t.Fatalf("enrolling %s to renew it: %v", name, err)
		}
		peer := f.Principal(t, iss)
		return func(src netip.Addr) (*authority.Issued, error) {
			return f.Authority.Renew(context.Background(), authority.RenewRequest{Peer: peer, CSR: authoritytest.CSR(t), Source: src})
		}
	}},
	{"acme", func(t *testing.T, f *doorsFixture, name string) func(netip.Addr) (*authority.Issued, error) {
		id := mustParse(t, name)
		return func(src netip.Addr) (*authority.Issued, error) {
			return f.Authority.IssueACME(context.Background(), authority.ACMERequest{
				Account: "https://127.0.0.1/acme/account/1", Profile: "wide", Identity: id,
				CSR: authoritytest.CSR(t, name), AccountKey: f.acmeKey.Public(), Source: src})
		}
	}},
}

func newDoorsFixture(t *testing.T) *doorsFixture {
	f := &doorsFixture{next: netip.MustParseAddr("10.0.0.1")}
	f.acmeKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.Fixture = authoritytest.NewWith(t, func(cfg *authority.Config) {
		l := limits.Limits{Profiles: map[string]limits.ProfileLimits{"wide": {PerSource: &limits.Bucket{Rate: "1/h", Burst: 1}}}}
		rules, err := limits.Compile(l, limits.Anomalies{}, []string{"service", "wide", authority.ProfileAdmin})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Guard, err = limits.New(limits.Config{Rules: rules, Recorder: cfg.Store}); err != nil {
			t.Fatal(err)
		}
	})
	return f
}

func (f *doorsFixture) source() netip.Addr {
	f.next = f.next.Next()
	return f.next
}

// refusedAtEveryDoor prepares name at each door, applies the rule, and
// checks that every door refuses with the same kind and reason and records
// the refusal.
func refusedAtEveryDoor(t *testing.T, f *doorsFixture, names func(door string) string, apply func(), kind authority.Kind, reason string) {
	t.Helper()
	requests := make([]func(netip.Addr) (*authority.Issued, error), len(doors))
	for i, d := range doors {
		requests[i] = d.prepare(t, f, names(d.name))
	}
	apply()
	for i, d := range doors {
		before := refusals(t, f, names(d.name))
		iss, err := requests[i](f.source())
		if iss != nil {
			t.Errorf("%s: issued %s", d.name, iss.Record.Serial)
		}
		wantRefusal(t, d.name, err, kind, reason)
		if got := refusals(t, f, names(d.name)); got != before+1 {
			t.Errorf("%s: %d refusals recorded for %s, want %d", d.name, got, names(d.name), before+1)
		}
	}
}

func refusals(t *testing.T, f *doorsFixture, name string) int {
	t.Helper()
	evs, err := f.Store.Events(context.Background(), store.EventFilter{Actions: []store.Action{store.ActionIssuanceRefused}})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ev := range evs {
		if ev.Identity == name {
			n++
		}
	}
	return n
}

// The rules of the shared path hold at every door alike: Enroll, Renew and
// IssueACME refuse a denied identity, a name that is (or became) reserved,
// and a source over its rate limit, each with the same kind and reason.
func TestEveryDoorGoesThroughThePrelude(t *testing.T) {
	ctx := context.Background()
	t.Run("denied identity", func(t *testing.T) {
		f := newDoorsFixture(t)
		name := func(door string) string { return "spiffe://example.org/denied/" + door }
		refusedAtEveryDoor(t, f, name, func() {
			for _, d := range doors {
				if _, err := f.Authority.Deny(ctx, f.Admin, name(d.name), "compromised", netip.Addr{}); err != nil {
					t.Fatal(err)
				}
			}
		}, authority.KindForbidden, authority.ReasonIdentityDenied)
	})
	t.Run("reserved name", func(t *testing.T) {
		// Names under /mica are issued only under mica's own profiles. To
		// hold a credential for one under "wide" (and a token for it), the
		// authority starts with a policy that reserves nothing, as a
		// server would have before the name became reserved (mica's own
		// profiles stay its own: the OCSP responders' may sign OCSP).
		f := newDoorsFixture(t)
		reserving := f.swapPolicy(t, func(pc *policy.Config) { pc.Reserved = policy.Reserved{ProfilePrefix: pc.Reserved.ProfilePrefix} })
		name := func(door string) string { return "spiffe://example.org/mica/svc-" + door }
		refusedAtEveryDoor(t, f, name, func() { f.Authority.SetPolicy(reserving) }, authority.KindPolicyDenied, string(policy.ReasonReservedName))
	})
	t.Run("rate limit", func(t *testing.T) {
		f := newDoorsFixture(t)
		for _, d := range doors {
			name := "spiffe://example.org/limited/" + d.name
			request := d.prepare(t, f, name)
			src := f.source()
			if _, err := request(src); err != nil {
				t.Fatalf("%s: first request from %s: %v", d.name, src, err)
			}
			iss, err := request(src)
			if iss != nil {
				t.Errorf("%s: second request from %s within the hour issued %s", d.name, src, iss.Record.Serial)
			}
			wantRefusal(t, d.name+" over the source limit", err, authority.KindRateLimited, "")
		}
	})
}

// swapPolicy makes the authority's policy the fixture's with adjust
// applied, and returns the one it replaced.
func (f *doorsFixture) swapPolicy(t *testing.T, adjust func(*policy.Config)) authority.Policy {
	t.Helper()
	pc := authoritytest.PolicyConfig()
	adjust(&pc)
	eng, err := policy.New(pc)
	if err != nil {
		t.Fatal(err)
	}
	old, err := policy.New(authoritytest.PolicyConfig())
	if err != nil {
		t.Fatal(err)
	}
	f.Authority.SetPolicy(eng)
	return old
}

// The key step is the prelude's too: a CSR whose signature does not match
// its key is refused at every door, and only a renewal authenticated by
// the certificate itself may keep its key.
func TestEveryDoorChecksTheCSR(t *testing.T) {
	f := newDoorsFixture(t)
	ctx := context.Background()
	bad := authoritytest.CSR(t, "spiffe://example.org/csr/acme")
	bad[len(bad)-3] ^= 0xff // in the signature
	if _, err := x509.ParseCertificateRequest(bad); err != nil {
		t.Fatalf("the damaged CSR must parse, so that its signature is what is refused: %v", err)
	}
	tok := f.Token(t, authority.TokenRequest{Identity: "spiffe://example.org/csr/enroll", Profile: "wide"})
	_, err := f.Authority.Enroll(ctx, authority.EnrollRequest{Token: tok, CSR: bad, Source: f.source()})
	wantRefusal(t, "enroll with a bad CSR signature", err, authority.KindBadCSR, "")

	cred := f.EnrollCred(t, "wide", "spiffe://example.org/csr/renew")
	peer := f.Principal(t, cred.Issued)
	_, err = f.Authority.Renew(ctx, authority.RenewRequest{Peer: peer, CSR: bad, Source: f.source()})
	wantRefusal(t, "renew with a bad CSR signature", err, authority.KindBadCSR, "")

	_, err = f.Authority.IssueACME(ctx, authority.ACMERequest{Account: "https://127.0.0.1/acme/account/1", Profile: "wide",
		Identity: mustParse(t, "spiffe://example.org/csr/acme"), CSR: bad, AccountKey: f.acmeKey.Public(), Source: f.source()})
	wantRefusal(t, "ACME with a bad CSR signature", err, authority.KindBadCSR, "")

	// Keeping the key: the handshake with this certificate proved it.
	kept, err := f.Authority.Renew(ctx, authority.RenewRequest{Peer: peer, KeepKey: true, Source: f.source()})
	if err != nil {
		t.Fatalf("renewal keeping its key: %v", err)
	}
	if !kept.Certificate.PublicKey.(*ecdsa.PublicKey).Equal(cred.Key.Public()) {
		t.Error("the renewal that keeps its key certified another key")
	}
	// Carrying out an approved request proves no key.
	approved := peer
	approved.Approval = "approval-1"
	_, err = f.Authority.Renew(ctx, authority.RenewRequest{Peer: approved, KeepKey: true, Source: f.source()})
	wantRefusal(t, "keep_key without the certificate's handshake", err, authority.KindBadCSR, "")
	_, err = f.Authority.Renew(ctx, authority.RenewRequest{Peer: peer, KeepKey: true, CSR: authoritytest.CSR(t), Source: f.source()})
	wantRefusal(t, "keep_key with a CSR", err, authority.KindBadCSR, "")
}

// Each door's authorization is asked of Authorize: an enrollment needs a
// verified token, an ACME issuance an ACME account; a certificate holder
// of any role is neither.
func TestAuthorizeDoors(t *testing.T) {
	f := authoritytest.New(t)
	workload := f.Principal(t, f.Issue(t, "spiffe://example.org/billing/api"))
	res := authority.Resource{Profile: "service", Identity: "spiffe://example.org/billing/api"}
	for _, p := range []authority.Principal{{}, workload, f.Admin, {Name: "token:"}} {
		for _, act := range []authority.Action{authority.ActEnroll, authority.ActACMEIssue} {
			wantRefusal(t, fmt.Sprintf("%q %s", p.Name, act), f.Authority.Authorize(p, act, res), authority.KindForbidden, "")
		}
	}
	if err := f.Authority.Authorize(authority.Principal{Name: "token:abc", Token: "abc"}, authority.ActEnroll, res); err != nil {
		t.Errorf("a verified token may enroll: %v", err)
	}
	if err := f.Authority.Authorize(authority.Principal{Name: authority.ACMEPrincipalPrefix + "https://ca/acct/1"}, authority.ActACMEIssue, res); err != nil {
		t.Errorf("an ACME account may order: %v", err)
	}
}
