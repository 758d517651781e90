package main

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mica-pki/mica/client"
)

// A policy change reaches three servers on one PostgreSQL without a
// restart: a profile proposed through one server is usable through every
// server within the follow interval.
func TestPolicyReachesReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three servers on PostgreSQL")
	}
	e := newTestEnv(t, "postgres")
	servers := []*serverProc{e.server, startServe(t, e.env), startServe(t, e.env)}
	tokenFor := func(srv *serverProc) cmdResult {
		return e.mica("token", "create", "--server", srv.url, "--identity", "spiffe://example.org/payments/api", "--profile", "payments")
	}
	for i, srv := range servers {
		if r := tokenFor(srv); r.code == 0 {
			t.Fatalf("server %d knows profile payments before it was proposed", i+1)
		}
	}
	newConfig := filepath.Join(t.TempDir(), "mica.yaml")
	old, err := os.ReadFile(filepath.Join(e.dataDir, configFileName))
	if err != nil {
		t.Fatal(err)
	}
	proposed := strings.Replace(string(old), "profiles:\n", "profiles:\n  payments:\n    spiffe: [\"/payments/*\"]\n", 1)
	if err := os.WriteFile(newConfig, []byte(proposed), 0o644); err != nil {
		t.Fatal(err)
	}
	out := e.micaOK("policy", "propose", "--server", servers[1].url, "--reason", "payments team", newConfig)
	if !regexp.MustCompile(`(?m)^\+\s+payments:$`).MatchString(out) || !strings.Contains(out, "policy version 2 is active") {
		t.Fatalf("propose printed:\n%s", out)
	}
	start := time.Now()
	for i, srv := range servers {
		deadline := time.Now().Add(30 * time.Second)
		for {
			r := tokenFor(srv)
			if r.code == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("server %d still refuses profile payments 30s after the change: %s", i+1, r.stderr)
			}
			time.Sleep(200 * time.Millisecond) // polling a real server for a state change, bounded by the deadline
		}
	}
	t.Logf("the change reached all three servers in %s (each follows every 2s)", time.Since(start).Round(10*time.Millisecond))
	for i, srv := range servers {
		c := e.adminClient(t, srv.url)
		list, err := c.PolicyVersions(context.Background())
		if err != nil || list.Applied != 2 || len(list.Versions) != 2 || list.Versions[0].Status != "active" {
			t.Errorf("server %d: versions %+v, %v", i+1, list, err)
		}
	}
}

// One administrator alone cannot change the policy or grant itself a role
// when the policy says so; two distinct administrators can. Through the
// real binary and API.
func TestGovernanceTwoAdministrators(t *testing.T) {
	const bob = "spiffe://example.org/mica/admin/bob"
	config := strings.Replace(testConfig, "admins:\n", "admins:\n  "+bob+": admin\n", 1) + `approvals:
  - {action: policy.change, required: 1, approvers: admin}
  - {action: ca.rotate, required: 1, approvers: admin}
roles:
  security: {permissions: [approval:decide, approval:read]}
`
	e := newTestEnvFrom(t, "sqlite", config)
	// Bob's credential: a token for the reserved admin profile (only an
	// admin may make one), enrolled like any machine.
	bobDir := e.issue(bob, "mica-admin")
	bobEnv := append(append([]string{}, e.env...), "MICA_CERT="+filepath.Join(bobDir, fullchainFile), "MICA_KEY="+filepath.Join(bobDir, keyFile))
	asBob := func(args ...string) string { t.Helper(); return micaOK(t, bobEnv, args...) }

	// A policy change: held for approval; the proposer cannot approve it.
	changed := filepath.Join(t.TempDir(), "mica.yaml")
	old, _ := os.ReadFile(filepath.Join(e.dataDir, configFileName))
	if err := os.WriteFile(changed, []byte(strings.Replace(string(old), "profiles:\n", "profiles:\n  payments:\n    spiffe: [\"/payments/*\"]\n", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := e.micaOK("policy", "propose", changed); !strings.Contains(out, "held for approval") {
		t.Fatalf("a policy change was not held for approval:\n%s", out)
	}
	pending, err := e.admin.Approvals(context.Background(), "pending")
	if err != nil || len(pending) != 1 || pending[0].Action != "policy.change" {
		t.Fatalf("pending requests: %+v, %v", pending, err)
	}
	id := pending[0].ID
	if r := e.mica("approvals", "approve", id); r.code == 0 || !strings.Contains(r.stderr, "may not decide it") {
		t.Fatalf("the proposer approved its own change: %d %s", r.code, r.stderr)
	}
	if r := e.mica("token", "create", "--identity", "spiffe://example.org/payments/api", "--profile", "payments"); r.code == 0 {
		t.Fatal("the change applied before its approval")
	}
	if out := asBob("approvals", "approve", id, "--comment", "reviewed"); !strings.Contains(out, "Status:     executed") && !strings.Contains(out, "executed") {
		t.Fatalf("bob's approval:\n%s", out)
	}
	e.micaOK("token", "create", "--identity", "spiffe://example.org/payments/api", "--profile", "payments")

	// A role for oneself: held until another administrator approves.
	if out := e.micaOK("role", "grant", "spiffe://example.org/mica/admin/admin", "security", "--for", "1h", "--reason", "audit week"); !strings.Contains(out, "held for approval") {
		t.Fatalf("a self-grant was not held:\n%s", out)
	}
	pending, _ = e.admin.Approvals(context.Background(), "pending")
	if len(pending) != 1 || pending[0].Action != "role.grant" {
		t.Fatalf("pending requests: %+v", pending)
	}
	asBob("approvals", "approve", pending[0].ID)
	if out := e.micaOK("role", "list"); !strings.Contains(out, "security") {
		t.Fatalf("the approved grant is not in force:\n%s", out)
	}
	// Forcing a CA rotation step: held, then carried out on approval.
	if out := e.micaOK("ca", "rotate", "--prepare"); !strings.Contains(out, "held for approval") {
		t.Fatalf("a forced rotation was not held:\n%s", out)
	}
	if out := e.micaOK("ca", "status"); strings.Contains(out, "prepared") {
		t.Fatalf("a CA was prepared before the approval:\n%s", out)
	}
	pending, _ = e.admin.Approvals(context.Background(), "pending")
	if len(pending) != 1 || pending[0].Action != "ca.rotate" {
		t.Fatalf("pending requests: %+v", pending)
	}
	asBob("approvals", "approve", pending[0].ID)
	if out := e.micaOK("ca", "status"); !strings.Contains(out, "prepared") {
		t.Fatalf("no CA was prepared after the approval:\n%s", out)
	}
	// The audit log holds the whole chain.
	out := e.micaOK("audit", "search", "--action", "approval.executed")
	if strings.Count(out, "approval.executed") < 3 {
		t.Errorf("approval.executed events:\n%s", out)
	}
}

// adminClient is an API client with the data directory's admin credential
// for the server at url.
func (e *testEnv) adminClient(t *testing.T, url string) *client.Client {
	t.Helper()
	cred, err := tls.LoadX509KeyPair(filepath.Join(e.dataDir, "admin", fullchainFile), filepath.Join(e.dataDir, "admin", keyFile))
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{Server: url, Roots: e.roots, Certificate: &cred})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
