// Package testlayer splits the tests in two layers and says which test
// belongs to which.
//
// The unit layer is `go test -short ./...`: it needs nothing but Go and
// the Go module cache — no PostgreSQL, no built binaries, no external
// programs (openssl, nginx, certbot, lego, prometheus, chromium,
// softhsm2…) — and finishes in about a minute. The full suite
// (`make test`, which CI runs) is every test, the integration layer
// included; its script installs every program the tests drive, so there a
// missing program fails the test instead of skipping it.
//
// A test of the integration layer says so first, with what it needs:
//
//	testlayer.Integration(t, "starts mica serve and two agents")
//	openssl := testlayer.Tool(t, "openssl")
//
// PostgreSQL databases come from pgtest, which skips under -short by
// itself.
package testlayer

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Integration skips t under -short, saying what it needs that the unit
// layer does not have.
func Integration(t testing.TB, needs string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("integration: %s (the full suite runs it: make test)", needs)
	}
}

// Tool returns the path of the program name that an integration test
// drives, found on PATH or in /usr/sbin (where Debian puts nginx). Under
// -short it skips t; otherwise a missing program fails t, so the full
// suite never skips an interop test silently.
func Tool(t testing.TB, name string) string {
	t.Helper()
	Integration(t, "runs "+name)
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if p := filepath.Join("/usr/sbin", name); isExecutable(p) {
		return p
	}
	t.Fatalf("%s is not installed: run scripts/test.sh (it installs every program the tests drive) or apt-get install it", name)
	return ""
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
