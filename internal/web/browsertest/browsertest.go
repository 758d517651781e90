// Package browsertest runs Debian's Chromium headless for tests, driven
// with chromedp over a pipe (no debugging port is opened). Each browser
// gets a fresh profile directory and the flags that keep it off the
// network — no background requests, updates or sync, which this
// machine's closed network would refuse — and trusts exactly the TLS keys
// the test names (by SPKI pin), so no certificate error is ignored
// wholesale.
//
// Start one browser per test; NewContext opens an isolated browser context
// in it (its own cookies and storage, like a second person's browser).
package browsertest

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Browser is one headless Chromium process.
type Browser struct {
	alloc context.Context
}

// Timeout bounds every browser step a test waits for.
const Timeout = 30 * time.Second

// Start launches Chromium for t, trusting the TLS keys of certs. Without
// chromium it fails (scripts/test.sh installs it); -short skips.
func Start(t testing.TB, certs ...*x509.Certificate) *Browser {
	t.Helper()
	if testing.Short() {
		t.Skip("drives Chromium (not in -short)")
	}
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed: run scripts/test.sh (it installs it) or apt-get install chromium")
	}
	var pins []string
	for _, c := range certs {
		sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
		pins = append(pins, base64.StdEncoding.EncodeToString(sum[:]))
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("window-size", "1280,900"),
	)
	if len(pins) > 0 {
		opts = append(opts, chromedp.Flag("ignore-certificate-errors-spki-list", strings.Join(pins, ",")))
	}
	alloc, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	// Start the process now, so a broken installation fails here.
	ctx, stop := chromedp.NewContext(alloc)
	t.Cleanup(stop)
	open(t, ctx, stop, "starting chromium")
	return &Browser{alloc: ctx}
}

// NewContext opens a tab in a new browser context: a separate session,
// with no cookies from any other. It closes when the test ends.
func (b *Browser) NewContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.alloc, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	open(t, ctx, cancel, "opening a browser context")
	return ctx
}

// open runs the first action on ctx, which creates its browser or tab.
// That action's context owns what it creates, so it must be ctx itself,
// not one with a timeout; the deadline is kept by cancelling ctx instead.
func open(t testing.TB, ctx context.Context, cancel context.CancelFunc, what string) {
	t.Helper()
	timer := time.AfterFunc(Timeout, cancel)
	defer timer.Stop()
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// Step bounds one browser step by Timeout.
func Step(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, Timeout)
}
