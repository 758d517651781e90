package web_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/web/browsertest"
)

var updateScreenshots = flag.Bool("update-screenshots", false, "write the console's screenshots to docs/console")

// tab is one browser context signed in (or not) as somebody.
type tab struct {
	t    *testing.T
	ctx  context.Context
	name string
}

func (tb *tab) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := browsertest.Step(tb.ctx)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tb.t.Fatalf("%s: %s: %v\n%s", tb.name, what, err, tb.where())
	}
}

// where says which page the tab shows, for a failure's message.
func (tb *tab) where() string {
	ctx, cancel := context.WithTimeout(tb.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText.slice(0, 2000)`))
	if err != nil {
		return "(the page cannot be read: " + err.Error() + ")"
	}
	return "the page: " + s
}

func (tb *tab) text(sel string) string {
	tb.t.Helper()
	ctx, cancel := browsertest.Step(tb.ctx)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		tb.t.Fatalf("%s: text of %s: %v", tb.name, sel, err)
	}
	return s
}

func (tb *tab) eval(what, js string) string {
	tb.t.Helper()
	ctx, cancel := browsertest.Step(tb.ctx)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
	if err != nil {
		tb.t.Fatalf("%s: %s: %v", tb.name, what, err)
	}
	return s
}

// signIn opens a one-time link and confirms it.
func (tb *tab) signIn(link, who string) {
	tb.t.Helper()
	tb.do("open the link", chromedp.Navigate(link), chromedp.WaitVisible(chromedp.ID("signin")))
	if got := tb.text("#link-identity"); got != who {
		tb.t.Fatalf("%s: the link says it signs in %q, want %q", tb.name, got, who)
	}
	tb.do("sign in", chromedp.Click(chromedp.ID("signin")), chromedp.WaitVisible(chromedp.ID("who")))
	if got := tb.text("#who"); got != who {
		tb.t.Fatalf("%s: signed in as %q, want %q", tb.name, got, who)
	}
}

// unlabelled lists the page's form fields that no label names, and
// tables without a caption: what a screen reader could not announce.
const unlabelled = `[...document.querySelectorAll("input:not([type=hidden]), select, textarea")]
	.filter(e => !(e.labels && e.labels.length) && !e.getAttribute("aria-label")).map(e => e.name || e.id)
	.concat([...document.querySelectorAll("table")].filter(t => !t.caption && !t.closest("[aria-label],[aria-labelledby]")).map(t => "table#" + t.id))
	.concat(document.documentElement.lang ? [] : ["html lang"]).join(", ")`

// screenshot keeps the current page as docs/console/name.png with
// -update-screenshots; otherwise it only checks that the page painted. It
// checks first that every field and table of the page is labelled.
func (tb *tab) screenshot(name string) {
	tb.t.Helper()
	if missing := tb.eval("labels", unlabelled); missing != "" {
		tb.t.Errorf("%s: without a label: %s", name, missing)
	}
	ctx, cancel := browsertest.Step(tb.ctx)
	defer cancel()
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		tb.t.Fatalf("screenshot %s: %v", name, err)
	}
	img, err := png.Decode(bytes.NewReader(buf))
	if err != nil || img.Bounds().Dx() < 300 {
		tb.t.Fatalf("screenshot %s: %v", name, err)
	}
	if !*updateScreenshots {
		return
	}
	small, err := shrink(img)
	if err != nil {
		tb.t.Fatal(err)
	}
	path := filepath.Join("..", "..", "docs", "console", name+".png")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		tb.t.Fatal(err)
	}
	if err := os.WriteFile(path, small, 0o644); err != nil {
		tb.t.Fatal(err)
	}
}

// The console in Chromium, end to end: sign in with a one-time link (it
// works once), find a certificate by identity and revoke it, an approval
// appearing in a second administrator's queue and approved there, an
// auditor who has no revoke button and whose POST is refused, forged
// cross-origin and cross-site forms refused, the Content-Security-Policy
// enforced, keyboard and phone use. With -update-screenshots it writes the
// pictures in docs/console.
func TestConsoleInBrowser(t *testing.T) {
	h := newHarness(t)
	now := time.Now()
	load(t, h.f.Store, h.f.PKI, 0, 1500, now)
	target := h.f.Issue(t, "spiffe://example.org/billing/payments")
	held := h.f.EnrollCred(t, "wide", "api.example.org")
	if _, err := h.f.Authority.Deny(context.Background(), h.f.Admin, "spiffe://example.org/batch/job-13", "<b>leaked</b> token", netipZero); err != nil {
		t.Fatal(err)
	}
	br := browsertest.Start(t, h.cert)

	// Sign in with a one-time link.
	adminLink := h.link(h.adminCred())
	admin := &tab{t: t, ctx: br.NewContext(t), name: "admin"}
	admin.signIn(adminLink, authoritytest.AdminID)
	admin.do("overview", chromedp.WaitVisible(chromedp.ID("live-total")))

	// The link works once: a second browser gets a refusal, no session.
	late := &tab{t: t, ctx: br.NewContext(t), name: "second use"}
	late.do("open the used link", chromedp.Navigate(adminLink), chromedp.WaitVisible(chromedp.ID("signin-problem")))
	if msg := late.text("#signin-problem"); !strings.Contains(msg, "used already") {
		t.Errorf("a used link says %q", msg)
	}
	late.screenshot("signin-used")
	late.do("the console without a session", chromedp.Navigate(h.url+"/ui/certificates"), chromedp.WaitVisible(chromedp.CSS("h1")))
	if h1 := late.text("h1"); h1 != "Sign in to mica" {
		t.Errorf("the console without a session shows %q", h1)
	}

	// Find a certificate by identity, open it, revoke it.
	admin.do("search by identity",
		chromedp.Navigate(h.url+"/ui/certificates"),
		chromedp.SendKeys(chromedp.ID("q"), target.Record.Identity),
		chromedp.Click(chromedp.ID("search")),
		chromedp.WaitVisible(chromedp.CSS(`a[href="/ui/certificates/`+target.Record.Serial+`"]`)))
	admin.screenshot("inventory-search")
	if st := h.ocspStatus(target.Certificate); !strings.Contains(st, ": good") {
		t.Fatalf("OCSP before the revocation: %s", st)
	}
	admin.do("open it", chromedp.Click(chromedp.CSS(`a[href="/ui/certificates/`+target.Record.Serial+`"]`)), chromedp.WaitVisible(chromedp.ID("revoke-form")))
	if st := admin.text("#proof-state"); !strings.Contains(st, "verified here") {
		t.Errorf("the audit proof says %q", st)
	}
	admin.screenshot("certificate")
	admin.do("revoke it",
		chromedp.SetValue(chromedp.ID("reason"), "1"),
		chromedp.Click(chromedp.ID("confirm")),
		chromedp.Click(chromedp.ID("revoke")),
		chromedp.WaitVisible(chromedp.ID("done")))
	if st := admin.text("#cert-status"); !strings.Contains(st, "revoked") || !strings.Contains(st, "keyCompromise") {
		t.Errorf("after revoking, the status says %q", st)
	}
	// OCSP says so, as openssl reads it, once the responder has heard of
	// the revocation (from the feed, as in the server).
	h.waitRevoked(target.Record.Serial)
	if st := h.ocspStatus(target.Certificate); !strings.Contains(st, ": revoked") || !strings.Contains(st, "keyCompromise") {
		t.Errorf("OCSP after the revocation, as openssl reads it: %s", st)
	}

	// A revocation the rules hold for approval: a second administrator
	// sees it appear in the queue she has open, and approves it.
	second := &tab{t: t, ctx: br.NewContext(t), name: "admin2"}
	second.signIn(h.link(h.admin2), Admin2)
	second.do("open the queue", chromedp.Navigate(h.url+"/ui/approvals"), chromedp.WaitVisible(chromedp.ID("queue-empty")))
	admin.do("revoke a privileged certificate",
		chromedp.Navigate(h.url+"/ui/certificates/"+held.Issued.Record.Serial),
		chromedp.SetValue(chromedp.ID("reason"), "4"),
		chromedp.Click(chromedp.ID("confirm")),
		chromedp.Click(chromedp.ID("revoke")),
		chromedp.WaitVisible(chromedp.ID("held")))
	aps, err := h.f.Authority.Approvals(context.Background(), h.f.Admin, store.ApprovalFilter{Status: store.ApprovalPending})
	if err != nil || len(aps) != 1 {
		t.Fatalf("pending approvals: %v, %v", aps, err)
	}
	id := aps[0].ID
	if admin.eval("requester's buttons", `String(document.getElementById("approve-`+id+`") === null)`) != "true" {
		t.Errorf("the requester is offered to approve its own request")
	}
	// No reload: the queue refreshes itself (console.js, under the CSP).
	second.do("see it appear", chromedp.WaitVisible(chromedp.ID("approve-"+id)))
	second.screenshot("approvals")
	second.do("approve it",
		chromedp.SendKeys(chromedp.ID("comment-"+id), "checked with the owner"),
		chromedp.Click(chromedp.ID("approve-"+id)),
		chromedp.WaitVisible(chromedp.ID("done")))
	if rec, _ := h.f.Store.Certificate(context.Background(), held.Issued.Record.Serial); rec.Status != store.StatusRevoked || rec.RevocationReason != 4 {
		t.Errorf("after the approval the certificate is %+v", rec.Status)
	}
	if st := second.text("#recent-" + id); !strings.Contains(st, "executed") {
		t.Errorf("the decided request reads %q", st)
	}

	// An auditor: no revoke button, and the POST refused with the reason.
	auditor := &tab{t: t, ctx: br.NewContext(t), name: "auditor"}
	auditor.signIn(h.link(h.f.AuditorCred), authoritytest.AuditorID)
	victim := h.f.Issue(t, "spiffe://example.org/billing/ledger").Record.Serial
	auditor.do("open a certificate", chromedp.Navigate(h.url+"/ui/certificates/"+victim), chromedp.WaitVisible(chromedp.ID("serial")))
	if auditor.eval("revoke form", `String(document.getElementById("revoke-form") === null)`) != "true" {
		t.Errorf("the auditor is offered a revoke button")
	}
	post := fmt.Sprintf(`fetch("/ui/certificates/%s/revoke", {method: "POST", body: new URLSearchParams({csrf: document.querySelector("input[name=csrf]").value, reason: "1", confirm: "yes"})})
		.then(r => r.text().then(t => r.status + " " + t))`, victim)
	if got := auditor.eval("the auditor's POST", post); !strings.HasPrefix(got, "403 ") || !strings.Contains(got, "may not revoke") {
		t.Errorf("the auditor's POST: %.300s", got)
	}

	// CSRF from the browser: a fetch without the token is refused ...
	noToken := fmt.Sprintf(`fetch("/ui/certificates/%s/revoke", {method: "POST", body: new URLSearchParams({reason: "1", confirm: "yes"})}).then(r => String(r.status))`, victim)
	if got := admin.eval("a POST without the token", noToken); got != "403" {
		t.Errorf("a same-origin POST without the token: %s", got)
	}
	// ... a form on another origin of the same site, even holding the
	// session's token, is refused by the Origin check ...
	token := admin.eval("the token", `document.querySelector("input[name=csrf]").value`)
	forge := func(serial, tok string) string {
		return fmt.Sprintf(`<!doctype html><form id=f method=post action="%s/ui/certificates/%s/revoke">
<input name=csrf value="%s"><input name=reason value=1><input name=confirm value=yes></form>
<a id=go href="%s/ui/certificates">the console</a><script>document.getElementById("f").submit()</script>`, h.url, serial, tok, h.url)
	}
	evil := h.serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		if r.URL.Path == "/link" {
			fmt.Fprintf(w, `<!doctype html><a id=go href="%s/ui/certificates">the console</a>`, h.url)
			return
		}
		fmt.Fprint(w, forge(victim, token))
	}))
	admin.do("a forged form from another origin", chromedp.Navigate(evil.URL+"/"), chromedp.WaitVisible(chromedp.ID("error-message")))
	if msg := admin.text("#error-message"); !strings.Contains(msg, "not posted from a page of this console") {
		t.Errorf("the forged form's answer: %q", msg)
	}
	// ... and from another site (localhost is not 127.0.0.1) the cookie
	// is not even sent (SameSite=Strict), not on a link either.
	u, _ := url.Parse(evil.URL)
	crossSite := "https://localhost:" + u.Port()
	admin.do("a link from another site", chromedp.Navigate(crossSite+"/link"), chromedp.Click(chromedp.ID("go")), chromedp.WaitVisible(chromedp.CSS("h1")))
	if h1 := admin.text("h1"); h1 != "Sign in to mica" {
		t.Errorf("following a link from another site, the console shows %q (the cookie went along)", h1)
	}
	if rec, _ := h.f.Store.Certificate(context.Background(), victim); rec.Status != store.StatusActive {
		t.Errorf("a forged form revoked the certificate")
	}

	// The Content-Security-Policy: an injected inline script does not run,
	// and the browser reports the violation.
	admin.do("back to the console", chromedp.Navigate(h.url+"/ui/revocations"), chromedp.WaitVisible(chromedp.ID("denied")))
	inject := `new Promise(resolve => {
		document.addEventListener("securitypolicyviolation", e => resolve(e.effectiveDirective + " " + String(window.injected)));
		const s = document.createElement("script");
		s.textContent = "window.injected = 1";
		document.body.appendChild(s);
	})`
	if got := admin.eval("inject a script", inject); got != "script-src-elem undefined" {
		t.Errorf("an injected inline script: %q, want it blocked", got)
	}
	if got := admin.eval("markup in a reason", `String(document.querySelector("#denied b") === null) + " " + document.querySelector("#denied").innerText.includes("<b>leaked</b>")`); got != "true true" {
		t.Errorf("a deny reason with markup: %s, want it shown as text", got)
	}
	admin.screenshot("revocations")

	// The keyboard: the first Tab reaches the skip link, which moves to
	// the content.
	admin.do("tab", chromedp.Navigate(h.url+"/ui/"), chromedp.WaitVisible(chromedp.ID("live-total")), chromedp.KeyEvent("\t"))
	if got := admin.eval("focus", `document.activeElement.className + " " + document.activeElement.getAttribute("href")`); got != "skip #main" {
		t.Errorf("the first Tab focuses %q, want the skip link", got)
	}

	// Verify the audit log from its page; the result appears in place.
	admin.do("verify the log", chromedp.Navigate(h.url+"/ui/audit"), chromedp.Click(chromedp.ID("verify-now")),
		chromedp.WaitVisible(chromedp.CSS("#verification .badge.ok")))
	if st := admin.text("#verification"); !strings.Contains(st, "leaves recomputed") {
		t.Errorf("the verification says %q", st)
	}

	// The other pages, for the pictures; the overview last, when the
	// issuance rates have two samples.
	for _, p := range []struct{ path, wait, name string }{
		{"/ui/timeline", "timeline", "timeline"},
		{"/ui/report?within=7d", "report-total", "report"},
		{"/ui/audit", "checkpoint-size", "audit"},
		{"/ui/", "live-total", "overview"},
	} {
		admin.do(p.name, chromedp.Navigate(h.url+p.path), chromedp.WaitVisible(chromedp.ID(p.wait)))
		admin.screenshot(p.name)
		if p.name == "timeline" && admin.eval("bars", `String(document.querySelectorAll("#timeline rect").length)`) == "0" {
			t.Errorf("the timeline has no bars")
		}
	}

	// Dark, and a phone.
	admin.do("dark", chromedp.Action[chromedp.Void](func(ctx context.Context, _ *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}})
		return chromedp.Void{}, err
	}), chromedp.Navigate(h.url+"/ui/timeline"), chromedp.WaitVisible(chromedp.ID("timeline")))
	if bg := admin.eval("dark background", `getComputedStyle(document.body).backgroundColor`); bg != "rgb(15, 17, 21)" {
		t.Errorf("dark mode background %q", bg)
	}
	admin.screenshot("timeline-dark")
	phone := &tab{t: t, ctx: br.NewContext(t), name: "phone"}
	phone.do("phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile))
	phone.signIn(h.link(h.f.OperatorCred), authoritytest.OperatorID)
	if w := phone.eval("width", `String(document.documentElement.scrollWidth <= window.innerWidth)`); w != "true" {
		t.Errorf("on a phone the overview scrolls sideways")
	}
	phone.screenshot("overview-phone")
	_ = authority.ActCertRevoke
}

// shrink keeps a screenshot small: at most 1280 pixels wide, as a
// paletted PNG (a console page has few colours).
func shrink(img image.Image) ([]byte, error) {
	img = scaleDown(img, 1280)
	if b := img.Bounds(); b.Dy() > 2000 {
		img = img.(interface {
			SubImage(image.Rectangle) image.Image
		}).SubImage(image.Rect(b.Min.X, b.Min.Y, b.Max.X, b.Min.Y+2000))
	}
	var buf bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestCompression}
	if err := enc.Encode(&buf, toPaletted(img)); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ocspStatus asks the harness's OCSP responder about leaf with openssl.
func (h *harness) ocspStatus(leaf *x509.Certificate) string {
	h.t.Helper()
	dir := h.t.TempDir()
	write := func(name string, c *x509.Certificate) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o644); err != nil {
			h.t.Fatal(err)
		}
		return path
	}
	out, err := exec.Command("openssl", "ocsp", "-issuer", write("issuer.pem", h.f.PKI.Intermediate), "-cert", write("leaf.pem", leaf),
		"-CAfile", write("root.pem", h.f.PKI.Root), "-url", h.ocspURL).CombinedOutput()
	if err != nil {
		h.t.Fatalf("openssl ocsp: %v\n%s", err, out)
	}
	return string(out)
}

// waitRevoked waits until the OCSP responder has re-signed its answers
// for serial, for at most browsertest.Timeout.
func (h *harness) waitRevoked(serial string) {
	h.t.Helper()
	deadline := time.After(browsertest.Timeout)
	for {
		select {
		case s := <-h.revoked:
			if s == serial {
				return
			}
		case <-deadline:
			h.t.Fatalf("the OCSP responder did not hear of the revocation of %s within %s", serial, browsertest.Timeout)
		}
	}
}
