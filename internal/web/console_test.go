package web_test

import (
	"context"
	"crypto/tls"
	"encoding/csv"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
	"github.com/mica-pki/mica/internal/store"
)

// Every page renders for a signed-in administrator, with the headers the
// console promises; without a session every page sends the browser to
// sign in.
func TestPages(t *testing.T) {
	h := newHarness(t)
	iss := h.f.Issue(t, "spiffe://example.org/billing/api")
	b := h.newBrowser()
	if status, _ := b.get("/ui/"); status != http.StatusSeeOther {
		t.Fatalf("overview without a session: %d, want a redirect to sign in", status)
	}
	b.signIn(h.link(h.adminCred()))
	pages := map[string]string{
		"/ui/":             `id="live-total"`,
		"/ui/certificates": `spiffe://example.org/billing/api`,
		"/ui/certificates?q=" + iss.Record.Serial: `The certificate with this serial`,
		"/ui/certificates/" + iss.Record.Serial:   `id="revoke-form"`,
		"/ui/timeline":                            `<svg class="chart"`,
		"/ui/revocations":                         `id="denied"`,
		"/ui/audit":                               `id="checkpoint-size"`,
		"/ui/audit?action=cert.issued":            `cert.issued`,
		"/ui/approvals":                           `id="queue"`,
		"/ui/report?within=90d":                   `id="report-total"`,
	}
	for path, want := range pages {
		resp, err := b.hc.Get(b.url(path))
		if err != nil {
			t.Fatal(err)
		}
		page := readAll(resp)
		if resp.StatusCode != http.StatusOK || !strings.Contains(page, want) {
			t.Errorf("GET %s: %d, want 200 with %q\n%s", path, resp.StatusCode, want, page)
			continue
		}
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'nonce-") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, csp)
		}
		nonce := strings.TrimSuffix(strings.SplitN(strings.SplitN(csp, "'nonce-", 2)[1], "'", 2)[0], "")
		if !strings.Contains(page, `nonce="`+nonce+`"`) {
			t.Errorf("GET %s: the script does not carry the response's nonce %q", path, nonce)
		}
		if strings.Contains(page, "<script>") || strings.Contains(page, " onclick=") || strings.Contains(page, ` style="`) {
			t.Errorf("GET %s: inline script, handler or style in the page", path)
		}
		for _, hdr := range []string{"X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy"} {
			if resp.Header.Get(hdr) == "" {
				t.Errorf("GET %s: no %s header", path, hdr)
			}
		}
	}
	// The expiry report downloads as the CLI's CSV.
	resp, err := b.hc.Get(b.url("/ui/report.csv?within=90d"))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(strings.NewReader(readAll(resp))).ReadAll()
	if err != nil || len(rows) < 2 || strings.Join(rows[0], ",") != "profile,owner,group_count,group_earliest_expiry,serial,identity,not_after,fingerprint_sha256" ||
		!strings.Contains(resp.Header.Get("Content-Disposition"), "attachment") {
		t.Errorf("report.csv: %v, %v", rows, err)
	}
	found := false
	for _, r := range rows[1:] {
		found = found || r[4] == iss.Record.Serial
	}
	if !found {
		t.Errorf("report.csv does not list %s: %v", iss.Record.Serial, rows)
	}
}

func readAll(resp *http.Response) string {
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}

// A link works once; the session is audited from start to end; signing out
// ends it on the server, not only in the browser.
func TestSignInOnce(t *testing.T) {
	h := newHarness(t)
	link := h.link(h.f.AuditorCred)
	b := h.newBrowser()
	b.signIn(link)
	if status, page := b.get("/ui/"); status != http.StatusOK || !strings.Contains(page, authoritytest.AuditorID) {
		t.Fatalf("overview after signing in: %d", status)
	}
	if n := h.count(store.ActionConsoleSessionCreated); n != 1 {
		t.Errorf("%d session.created events, want 1", n)
	}
	// The same link again, in another browser: refused, and no session.
	other := h.newBrowser()
	status, page := other.get(link)
	if status != http.StatusUnauthorized || !strings.Contains(page, "used already or has expired") {
		t.Errorf("the link a second time: %d\n%s", status, page)
	}
	u, _ := url.Parse(link)
	resp, _ := other.post("/ui/signin", h.url, url.Values{"link": {u.Query().Get("link")}})
	if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
		t.Errorf("posting the spent link: %d, cookies %v", resp.StatusCode, resp.Cookies())
	}
	// The cookie the first sign-in set.
	ck := b.hc.Jar.Cookies(u)
	if len(ck) != 1 || ck[0].Name != "__Host-mica-console" {
		t.Fatalf("cookies %v", ck)
	}
	resp, body := b.post("/ui/signout", h.url, url.Values{"csrf": {b.csrf()}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign out: %d\n%s", resp.StatusCode, body)
	}
	if n := h.count(store.ActionConsoleSessionEnded); n != 1 {
		t.Errorf("%d session.ended events, want 1", n)
	}
	// The old cookie, replayed by hand, opens nothing.
	replay := h.newBrowser()
	replay.hc.Jar.SetCookies(u, ck)
	if status, _ := replay.get("/ui/"); status != http.StatusSeeOther {
		t.Errorf("a signed-out session's cookie: %d, want a redirect to sign in", status)
	}
}

// The cookie's attributes: HttpOnly, Secure, SameSite=Strict, host-only.
func TestSessionCookie(t *testing.T) {
	h := newHarness(t)
	b := h.newBrowser()
	link := h.link(h.f.OperatorCred)
	b.get(link)
	u, _ := url.Parse(link)
	resp, _ := b.post("/ui/signin", h.url, url.Values{"link": {u.Query().Get("link")}})
	raw := resp.Header.Get("Set-Cookie")
	for _, want := range []string{"__Host-mica-console=", "Path=/", "HttpOnly", "Secure", "SameSite=Strict", "Max-Age="} {
		if !strings.Contains(raw, want) {
			t.Errorf("Set-Cookie %q lacks %s", raw, want)
		}
	}
	if strings.Contains(strings.ToLower(raw), "domain=") {
		t.Errorf("Set-Cookie %q names a domain", raw)
	}
}

// A change needs the session's token and this origin; a forged one changes
// nothing. The session's powers are the credential's now: revoked, the
// session ends at its next request.
func TestChangesNeedTokenAndOrigin(t *testing.T) {
	h := newHarness(t)
	victim := h.f.Issue(t, "spiffe://example.org/billing/victim").Record.Serial
	b := h.newBrowser()
	b.signIn(h.link(h.adminCred()))
	token := b.csrf()
	revoke := "/ui/certificates/" + victim + "/revoke"
	form := url.Values{"reason": {"1"}, "confirm": {"yes"}}
	cases := []struct {
		name   string
		origin string
		csrf   string
	}{
		{"no token", h.url, ""},
		{"another session's token", h.url, strings.Repeat("A", len(token))},
		{"another origin", "https://localhost.evil.example", token},
		{"no origin", "", token},
	}
	for _, c := range cases {
		f := url.Values{}
		for k, v := range form {
			f[k] = v
		}
		if c.csrf != "" {
			f.Set("csrf", c.csrf)
		}
		resp, body := b.post(revoke, c.origin, f)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %d, want 403\n%s", c.name, resp.StatusCode, body)
		}
	}
	if rec, _ := h.f.Store.Certificate(context.Background(), victim); rec.Status != store.StatusActive {
		t.Fatalf("a refused form revoked the certificate")
	}
	form.Set("csrf", token)
	if resp, body := b.post(revoke, h.url, form); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the real form: %d\n%s", resp.StatusCode, body)
	}
	if rec, _ := h.f.Store.Certificate(context.Background(), victim); rec.Status != store.StatusRevoked || rec.RevocationReason != 1 {
		t.Fatalf("after revoking: %+v", rec)
	}

	// An operator's session: its credential revoked, it ends.
	op := h.newBrowser()
	op.signIn(h.link(h.f.OperatorCred))
	if _, err := h.f.Authority.Revoke(context.Background(), h.f.Admin, h.f.Operator.Record.Serial, 1, netipZero); err != nil {
		t.Fatal(err)
	}
	if status, _ := op.get("/ui/certificates"); status != http.StatusSeeOther {
		t.Errorf("a revoked credential's session: %d, want a redirect to sign in", status)
	}
	if n := h.count(store.ActionConsoleSessionEnded); n != 1 {
		t.Errorf("%d session.ended events, want 1", n)
	}
}

// An auditor sees no revoke button, and its POST is refused by the
// authority with the reason.
func TestAuditorCannotRevoke(t *testing.T) {
	h := newHarness(t)
	victim := h.f.Issue(t, "spiffe://example.org/billing/victim").Record.Serial
	b := h.newBrowser()
	b.signIn(h.link(h.f.AuditorCred))
	_, page := b.get("/ui/certificates/" + victim)
	if strings.Contains(page, "revoke-form") || !strings.Contains(page, victim) {
		t.Fatalf("the auditor's certificate page offers revocation (or is not the page)")
	}
	resp, body := b.post("/ui/certificates/"+victim+"/revoke", h.url, url.Values{"csrf": {b.csrf()}, "reason": {"1"}, "confirm": {"yes"}})
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "may not revoke") {
		t.Fatalf("the auditor's POST: %d\n%s", resp.StatusCode, body)
	}
	if rec, _ := h.f.Store.Certificate(context.Background(), victim); rec.Status != store.StatusActive {
		t.Fatal("the auditor revoked")
	}
	_ = authority.ActCertRevoke
}

// A browser that presents an administrator's client certificate signs in
// with it; a workload's certificate is refused.
func TestSignInWithCertificate(t *testing.T) {
	h := newHarness(t)
	withCert := func(c authoritytest.Cred) *browser {
		b := h.newBrowser()
		tr := b.hc.Transport.(*http.Transport)
		tr.TLSClientConfig.Certificates = []tls.Certificate{*c.TLS()}
		return b
	}
	b := withCert(h.f.OperatorCred)
	status, page := b.get("/ui/signin")
	if status != http.StatusOK || !strings.Contains(page, `id="signin-certificate"`) || !strings.Contains(page, authoritytest.OperatorID) {
		t.Fatalf("the sign-in page for a client certificate: %d\n%s", status, page)
	}
	resp, body := b.post("/ui/signin", h.url, url.Values{"certificate": {"1"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("signing in with the certificate: %d\n%s", resp.StatusCode, body)
	}
	if status, page := b.get("/ui/"); status != http.StatusOK || !strings.Contains(page, authoritytest.OperatorID) {
		t.Errorf("after signing in with the certificate: %d", status)
	}
	wl := h.f.EnrollCred(t, "service", "spiffe://example.org/billing/web")
	b = withCert(wl)
	if _, page := b.get("/ui/signin"); strings.Contains(page, `id="signin-certificate"`) {
		t.Errorf("a workload's certificate is offered to sign in")
	}
	if resp, body := b.post("/ui/signin", h.url, url.Values{"certificate": {"1"}}); resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
		t.Errorf("a workload's certificate signing in: %d\n%s", resp.StatusCode, body)
	}
}

// The deny list from the console: an admin denies and allows; an auditor
// has no form and is refused. A revocation the rules hold for approval
// goes to the queue, where only another admin may decide it.
func TestDenyAndDecide(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	const id = "spiffe://example.org/billing/stolen"
	admin, auditor := h.newBrowser(), h.newBrowser()
	admin.signIn(h.link(h.adminCred()))
	auditor.signIn(h.link(h.f.AuditorCred))
	if _, page := auditor.get("/ui/revocations"); strings.Contains(page, `action="/ui/identities/deny"`) {
		t.Errorf("the auditor is offered the deny form")
	}
	resp, body := auditor.post("/ui/identities/deny", h.url, url.Values{"csrf": {auditor.csrf()}, "identity": {id}})
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "may not change the deny list") {
		t.Errorf("the auditor denying: %d\n%s", resp.StatusCode, body)
	}
	resp, body = admin.post("/ui/identities/deny", h.url, url.Values{"csrf": {admin.csrf()}, "identity": {id}, "reason": {"laptop stolen"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the admin denying: %d\n%s", resp.StatusCode, body)
	}
	if denied, _ := h.f.Store.IsDenied(ctx, id); !denied {
		t.Fatalf("%s is not denied", id)
	}
	if _, page := admin.get("/ui/revocations"); !strings.Contains(page, "laptop stolen") {
		t.Errorf("the deny list does not show the reason")
	}
	if resp, _ := admin.post("/ui/identities/allow", h.url, url.Values{"csrf": {admin.csrf()}, "identity": {id}}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("allowing: %d", resp.StatusCode)
	}
	if denied, _ := h.f.Store.IsDenied(ctx, id); denied {
		t.Errorf("%s is still denied", id)
	}

	wide := h.f.EnrollCred(t, "wide", "db.example.org").Issued.Record.Serial
	resp, _ = admin.post("/ui/certificates/"+wide+"/revoke", h.url, url.Values{"csrf": {admin.csrf()}, "reason": {"4"}, "confirm": {"yes"}})
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/ui/approvals?held=") {
		t.Fatalf("a held revocation: %d to %q", resp.StatusCode, loc)
	}
	held := strings.TrimPrefix(loc, "/ui/approvals?held=")
	for _, c := range []struct {
		who  *browser
		want string
	}{{admin, "may not decide it"}, {auditor, "may not decide approval requests"}} {
		resp, body := c.who.post("/ui/approvals/"+held+"/decide", h.url, url.Values{"csrf": {c.who.csrf()}, "decision": {"approve"}})
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, c.want) {
			t.Errorf("deciding %s: %d\n%s", held, resp.StatusCode, body)
		}
	}
	second := h.newBrowser()
	second.signIn(h.link(h.admin2))
	if _, page := second.get("/ui/approvals"); !strings.Contains(page, `id="approve-`+held+`"`) {
		t.Fatalf("the second admin is not offered to approve %s", held)
	}
	if resp, body := second.post("/ui/approvals/"+held+"/decide", h.url, url.Values{"csrf": {second.csrf()}, "decision": {"reject"}, "comment": {"not this one"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("rejecting: %d\n%s", resp.StatusCode, body)
	}
	if rec, _ := h.f.Store.Certificate(ctx, wide); rec.Status != store.StatusActive {
		t.Errorf("a rejected revocation ran")
	}
	if ap, _ := h.f.Store.Approval(ctx, held); ap.Status != store.ApprovalRejected || len(ap.Votes) != 1 || ap.Votes[0].Comment != "not this one" {
		t.Errorf("the request after rejecting: %+v", ap)
	}
}

// A governance request made elsewhere (a role grant asked for on the
// command line) waits in the console's queue; its requester is not offered
// to decide it, a second administrator approves it there, and the grant
// reaches the grantee's next session: the auditor, given admin for an
// hour, is offered the revoke button it was refused before.
func TestGrantApprovedInConsole(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if _, err := h.f.Authority.SeedPolicy(ctx, []byte("profiles: {}\n")); err != nil {
		t.Fatal(err)
	}
	svc := h.f.Issue(t, "spiffe://example.org/billing/grant").Record.Serial
	before := h.newBrowser()
	before.signIn(h.link(h.f.AuditorCred))
	if _, page := before.get("/ui/certificates/" + svc); strings.Contains(page, `id="revoke-form"`) {
		t.Fatalf("the auditor is offered to revoke before any grant")
	}

	_, err := h.f.Authority.GrantRole(ctx, h.f.Admin, authority.GrantRequest{Identity: authoritytest.AuditorID, Role: authority.RoleAdmin,
		For: time.Hour, Reason: "incident 42"})
	var held *authority.Error
	if !errors.As(err, &held) || held.Kind != authority.KindApprovalPending || held.Pending == nil {
		t.Fatalf("granting admin: %v, want it held for approval", err)
	}
	id := held.Pending.ID

	admin := h.newBrowser()
	admin.signIn(h.link(h.adminCred()))
	if _, page := admin.get("/ui/approvals"); !strings.Contains(page, `id="request-`+id+`"`) || strings.Contains(page, `id="approve-`+id+`"`) ||
		!strings.Contains(page, "may not decide it") {
		t.Errorf("the requester's queue should list %s without buttons, saying why", id)
	}
	second := h.newBrowser()
	second.signIn(h.link(h.admin2))
	_, page := second.get("/ui/approvals")
	if !strings.Contains(page, `id="approve-`+id+`"`) || !strings.Contains(page, "role.grant") || !strings.Contains(page, authoritytest.AuditorID) {
		t.Fatalf("the second admin's queue does not offer %s with its parameters:\n%.3000s", id, page)
	}
	if resp, body := second.post("/ui/approvals/"+id+"/decide", h.url, url.Values{"csrf": {second.csrf()}, "decision": {"approve"}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("approving: %d\n%s", resp.StatusCode, body)
	}
	if ap, _ := h.f.Store.Approval(ctx, id); ap.Status != store.ApprovalExecuted {
		t.Fatalf("the grant after its approval is %s (%s)", ap.Status, ap.Result)
	}
	// The queue's page shows what the approvers govern: the grant in
	// force, and the policy version every server applies.
	grants, err := h.f.Authority.Grants(ctx, h.f.Admin, authoritytest.AuditorID, false)
	if err != nil || len(grants) != 1 {
		t.Fatalf("grants of the auditor: %v, %v", grants, err)
	}
	_, page = second.get("/ui/approvals")
	if row := regexp.MustCompile(`(?s)<tr id="grant-` + grants[0].ID + `">.*?</tr>`).FindString(page); !strings.Contains(row, authoritytest.AuditorID) ||
		!strings.Contains(row, "<code>admin</code>") || !strings.Contains(row, "incident 42") || !strings.Contains(row, authoritytest.AdminID) {
		t.Errorf("the grant's row: %q", row)
	}
	if !strings.Contains(page, `<tr id="policy-1">`) || !strings.Contains(page, "applies version <strong>1</strong>") {
		t.Errorf("the approvals page does not show policy version 1 applied")
	}

	// The session opened before the grant keeps the roles it began with;
	// a new one has the grant.
	if _, page := before.get("/ui/certificates/" + svc); strings.Contains(page, `id="revoke-form"`) {
		t.Errorf("a grant reached a session opened before it")
	}
	after := h.newBrowser()
	after.signIn(h.link(h.f.AuditorCred))
	if _, page := after.get("/ui/certificates/" + svc); !strings.Contains(page, `id="revoke-form"`) {
		t.Errorf("the auditor granted admin is not offered to revoke")
	}
	if resp, body := after.post("/ui/certificates/"+svc+"/revoke", h.url, url.Values{"csrf": {after.csrf()}, "reason": {"1"}, "confirm": {"yes"}}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("the auditor granted admin revoking: %d\n%.1000s", resp.StatusCode, body)
	}
	if rec, _ := h.f.Store.Certificate(ctx, svc); rec.Status != store.StatusRevoked {
		t.Errorf("the revocation by the granted admin did not happen")
	}
}
