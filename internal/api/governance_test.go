package api_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/api"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
)

// A request held for approvers is a 202 with the request; a second
// administrator approves it over HTTPS; the requester collects the token.
func TestApprovalOverHTTPS(t *testing.T) {
	const admin2 = "spiffe://example.org/mica/admin/admin2"
	var names []string
	for n := range authoritytest.PolicyConfig().Profiles {
		names = append(names, n)
	}
	access, err := authority.CompileAccess(authority.Governance{
		Admins:    map[string]authority.RoleList{authoritytest.AdminID: {"admin"}, authoritytest.OperatorID: {"operator"}, admin2: {"admin"}},
		Approvals: []authority.ApprovalRule{{Action: authority.ActTokenCreate, Profiles: []string{"wide"}, Required: 1, Approvers: authority.RoleAdmin}},
	}, "example.org", names)
	if err != nil {
		t.Fatal(err)
	}
	f := authoritytest.NewWith(t, func(c *authority.Config) { c.Access = access })
	srv := httptest.NewUnstartedServer(api.New(api.Config{Authority: f.Authority, TrustDomain: "example.org"}))
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS13, ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	as := func(c authoritytest.Cred) *client.Client {
		cl, err := client.New(client.Config{Server: srv.URL, Roots: roots, Certificate: c.TLS()})
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}
	op, second := as(f.OperatorCred), as(f.IssueCred(t, authority.ProfileAdmin, admin2))
	ctx := context.Background()
	req := client.TokenRequest{Identity: "spiffe://example.org/x/y", Profile: "wide", TTL: "10m"}
	_, err = op.CreateToken(ctx, req)
	var pe *client.PendingError
	if !errors.As(err, &pe) || pe.Approval.Status != "pending" || pe.Approval.Requester != authoritytest.OperatorID {
		t.Fatalf("token for wide: %v, want it held for approval", err)
	}
	if _, err := op.Decide(ctx, pe.Approval.ID, true, ""); problemSlug(err) != "forbidden" {
		t.Fatalf("the requester approving: %v", err)
	}
	ap, err := second.Decide(ctx, pe.Approval.ID, true, "ok")
	if err != nil || ap.Status != "approved" || len(ap.Votes) != 1 {
		t.Fatalf("approval: %+v, %v", ap, err)
	}
	req.Approval = pe.Approval.ID
	tok, err := op.CreateToken(ctx, req)
	if err != nil || tok.Token == "" {
		t.Fatalf("collecting the token: %v", err)
	}
	list, err := op.Approvals(ctx, "")
	if err != nil || len(list) != 1 || list[0].Status != "executed" {
		t.Fatalf("the operator's requests: %+v, %v", list, err)
	}
}
