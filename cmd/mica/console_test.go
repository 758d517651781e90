package main

import (
	"crypto/tls"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/mica-pki/mica/internal/web/browsertest"
)

// The console of the real server in Chromium: `mica console login` prints
// a one-time link that signs a browser in; the browser finds a certificate
// by identity and revokes it, and OCSP on the server's plain-HTTP listener
// (asked by openssl) says revoked; the link does not work a second time,
// and the server refuses a link without a credential.
func TestConsole(t *testing.T) {
	e := newTestEnv(t, "sqlite")
	dir := e.issue("spiffe://example.org/billing/console", "service")
	leaf := readLeaf(t, dir)
	serial := leaf.SerialNumber.Text(16)

	link := strings.TrimSpace(e.micaOK("console", "login"))
	u, err := url.Parse(link)
	if err != nil || u.Scheme != "https" || u.Path != "/ui/signin" || len(u.Query().Get("link")) != 43 {
		t.Fatalf("console login printed %q", link)
	}
	if r := mica(t, e.env, "console", "login", "--cert", filepath.Join(dir, certFile), "--key", filepath.Join(dir, keyFile)); r.code != 1 ||
		!strings.Contains(r.stderr, "may not sign in to the web console") {
		t.Errorf("a workload's credential asking for a link: %d %s", r.code, r.stderr)
	}

	// Chromium trusts exactly the server's key.
	conn, err := tls.Dial("tcp", u.Host, &tls.Config{RootCAs: e.roots, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	serverCert := conn.ConnectionState().PeerCertificates[0]
	conn.Close()
	br := browsertest.Start(t, serverCert)
	ctx := br.NewContext(t)
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := browsertest.Step(ctx)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		sctx, cancel := browsertest.Step(ctx)
		defer cancel()
		s, err := chromedp.Run(sctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	step("sign in", chromedp.Navigate(link), chromedp.WaitVisible(chromedp.ID("signin")), chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("who")))
	if who := text("#who"); who != "spiffe://example.org/mica/admin/admin" {
		t.Fatalf("signed in as %q", who)
	}
	step("find by identity", chromedp.Navigate(e.server.url+"/ui/certificates"),
		chromedp.SendKeys(chromedp.ID("q"), "spiffe://example.org/billing/console"))
	// The search is a GET form: wait for the page it loads before clicking
	// in it, or the click may find the link in the page being left.
	func() {
		sctx, cancel := browsertest.Step(ctx)
		defer cancel()
		if _, err := chromedp.RunResponse(sctx, chromedp.Click(chromedp.ID("search"))); err != nil {
			t.Fatalf("search: %v", err)
		}
	}()
	step("open the certificate", chromedp.Click(chromedp.CSS(`a[href="/ui/certificates/`+serial+`"]`)), chromedp.WaitVisible(chromedp.ID("revoke-form")))
	ocsp := func() string {
		out, err := openssl(t, "ocsp", "-issuer", filepath.Join(dir, chainFile), "-cert", filepath.Join(dir, certFile),
			"-url", e.server.httpURL+"/ocsp", "-CAfile", filepath.Join(e.dataDir, "ca", "root.pem"))
		if err != nil {
			t.Fatalf("openssl ocsp: %v\n%s", err, out)
		}
		return out
	}
	if out := ocsp(); !strings.Contains(out, ": good") {
		t.Fatalf("OCSP before: %s", out)
	}
	step("revoke", chromedp.SetValue(chromedp.ID("reason"), "1"), chromedp.Click(chromedp.ID("confirm")), chromedp.Click(chromedp.ID("revoke")),
		chromedp.WaitVisible(chromedp.ID("done")))
	eventually(t, "OCSP to say revoked", func() error {
		if out := ocsp(); !strings.Contains(out, ": revoked") || !strings.Contains(out, "keyCompromise") {
			return errString("openssl ocsp: " + out)
		}
		return nil
	})

	// The link again, in another browser context: refused.
	other := br.NewContext(t)
	sctx, cancel := browsertest.Step(other)
	defer cancel()
	if err := chromedp.Do(sctx, chromedp.Navigate(link), chromedp.WaitVisible(chromedp.ID("signin-problem"))); err != nil {
		t.Fatalf("the link a second time: %v", err)
	}
	msg, _ := chromedp.Run(sctx, chromedp.Text(chromedp.ID("signin-problem")))
	if !strings.Contains(msg, "used already") {
		t.Errorf("the link a second time says %q", msg)
	}

	// The audit log has the session.
	if out := e.micaOK("audit", "search", "--action", "console.session.created"); !strings.Contains(out, "console session") {
		t.Errorf("audit search for the session: %s", out)
	}
	// /ui without the slash goes to the console.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.roots}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Get(e.server.url + "/ui")
	if err != nil || resp.StatusCode/100 != 3 || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("GET /ui: %v %v", err, resp)
	}
}
