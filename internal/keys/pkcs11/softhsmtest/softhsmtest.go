// Package softhsmtest makes SoftHSM2 tokens for tests: real PKCS#11, from
// Debian's softhsm2 package (scripts/test.sh installs it).
//
// Every token of a test process lives in one token directory named by one
// SoftHSM2 config file, which this package points SOFTHSM2_CONF at once, so
// that the library (loaded once per process) and child processes (mica
// itself, started by the tests) see the same tokens.
package softhsmtest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/mica-pki/mica/internal/keys/pkcs11"
)

// PIN is every test token's user PIN.
const PIN = "1234-test-pin"

// modules are where Debian and other distributions put the library.
var modules = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
}

var setup = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "mica-softhsm-")
	if err != nil {
		return "", err
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		return "", err
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	data := "directories.tokendir = " + tokens + "\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"
	if err := os.WriteFile(conf, []byte(data), 0o600); err != nil {
		return "", err
	}
	return conf, os.Setenv("SOFTHSM2_CONF", conf)
})

// Module is the path of the SoftHSM2 library; the test fails when it is not
// installed (and is skipped with -short).
func Module(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("uses SoftHSM2 (not in -short)")
	}
	for _, m := range modules {
		if _, err := os.Stat(m); err == nil {
			return m
		}
	}
	t.Fatalf("softhsmtest: SoftHSM2 is not installed: run scripts/test.sh (it installs it) or apt-get install softhsm2")
	return ""
}

// Conf is the SoftHSM2 config file every token of this process is in; child
// processes need SOFTHSM2_CONF set to it (it is already in this process's
// environment, which exec.Command passes on).
func Conf(t testing.TB) string {
	t.Helper()
	conf, err := setup()
	if err != nil {
		t.Fatalf("softhsmtest: %v", err)
	}
	return conf
}

// New initialises a new, empty token with a fresh label and returns the
// configuration that opens it. The token is deleted when the test ends.
// Open it only after New returns: the library sees tokens created while
// it was loaded only once every Token of the process has been closed.
func New(t testing.TB) pkcs11.Config {
	t.Helper()
	module := Module(t)
	Conf(t)
	util, err := exec.LookPath("softhsm2-util")
	if err != nil {
		t.Fatalf("softhsmtest: softhsm2-util is not installed: run scripts/test.sh or apt-get install softhsm2")
	}
	var b [6]byte
	rand.Read(b[:])
	label := "mica-test-" + hex.EncodeToString(b[:])
	out, err := exec.Command(util, "--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", "so-"+PIN).CombinedOutput()
	if err != nil {
		t.Fatalf("softhsmtest: softhsm2-util --init-token: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		exec.Command(util, "--delete-token", "--token", label).Run()
	})
	return pkcs11.Config{Module: module, Token: label, PIN: PIN}
}
