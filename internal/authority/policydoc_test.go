package authority_test

import (
	"strings"
	"testing"

	"github.com/mica-pki/mica/internal/authority"
)

func TestPolicyDocumentRoundTrip(t *testing.T) {
	src := `
admins:
  spiffe://example.org/mica/admin/alice: admin
  spiffe://example.org/mica/admin/bob: [operator, security]
roles:
  security: {permissions: [approval:decide]}
approvals:
  - {action: token.create, profiles: [svc], required: 1, approvers: security}
profiles:
  svc: {spiffe: ["/svc/*"], default_ttl: 1h, max_ttl: 1d}
`
	d, err := authority.ParsePolicyDocument([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	out, err := d.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	again, err := authority.ParsePolicyDocument(out)
	if err != nil {
		t.Fatalf("the canonical form does not read back: %v\n%s", err, out)
	}
	out2, _ := again.Marshal()
	if string(out) != string(out2) {
		t.Fatalf("not canonical:\n%s\n---\n%s", out, out2)
	}
	if strings.Contains(string(out), "min_rsa_bits") {
		t.Errorf("zero fields are written:\n%s", out)
	}
	c, err := d.Compile("example.org", []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Policy == nil || c.Access == nil {
		t.Fatal("nothing compiled")
	}
	if _, err := authority.ParsePolicyDocument([]byte("profiles: {}\nlisten: x\n")); err == nil {
		t.Error("a server setting in a policy document was accepted")
	}
	bad := d
	bad.Approvals = append(bad.Approvals, authority.ApprovalRule{Action: "cert.renew", Required: 1, Approvers: "admin"})
	if _, err := bad.Compile("example.org", nil); err == nil || !strings.Contains(err.Error(), "not approvable") {
		t.Errorf("an unapprovable action: %v", err)
	}
}
