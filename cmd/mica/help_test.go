package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mica-pki/mica/credential"
)

// leaves lists every runnable command path, e.g. ["cert", "revoke"].
func leaves(prefix []string, cmds map[string]command) [][]string {
	var out [][]string
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		path := append(append([]string{}, prefix...), n)
		if cmds[n].sub != nil {
			out = append(out, leaves(path, cmds[n].sub)...)
		} else {
			out = append(out, path)
		}
	}
	return out
}

// flagLine is a flag in --help: its name, then at most the type of its
// argument. The flag package would take a `quoted` word of the usage text
// for the argument's name instead.
var flagLine = regexp.MustCompile(`^  -[a-z0-9-]+( (string|int|uint|float|duration|value))?$`)

// TestHelp asks every command for --help, in process: each flag's
// argument is named by its type, and the commands that take arguments show
// them in the usage line.
func TestHelp(t *testing.T) {
	wantArgs := map[string]string{"cert revoke": "[SERIAL]", "cert inspect": "FILE|SERIAL", "identity deny": "IDENTITY",
		"identity allow": "IDENTITY", "policy check": "[CONFIG]", "policy test": "[CASES]", "audit proof": "SERIAL",
		"approvals show": "ID", "approvals approve": "ID", "approvals reject": "ID", "role grant": "IDENTITY ROLE", "role revoke": "GRANT",
		"policy propose": "[CONFIG]", "policy show": "[VERSION]", "policy activate": "VERSION", "policy rollback": "VERSION", "policy reject": "VERSION"}
	for _, path := range leaves(nil, commands()) {
		name := strings.Join(path, " ")
		if name == "version" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			env := &cliEnv{stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }}
			if code := run(context.Background(), env, append(path, "--help")); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			lines := strings.Split(stderr.String(), "\n")
			want := "usage: mica " + name + " [flags]"
			if a := wantArgs[name]; a != "" {
				want += " " + a
			}
			if lines[0] != want {
				t.Errorf("usage line %q, want %q", lines[0], want)
			}
			for _, l := range lines {
				if strings.HasPrefix(l, "  -") && !flagLine.MatchString(l) {
					t.Errorf("flag line %q names its argument oddly", l)
				}
			}
		})
	}
}

func TestVersion(t *testing.T) {
	long := micaOK(t, nil, "--version")
	if !regexp.MustCompile(`^mica (v\S+|devel(\+[0-9a-f]{12}(-dirty)?)?) go1\.\S+\n$`).MatchString(long) {
		t.Errorf("mica --version: %q", long)
	}
	if short := micaOK(t, nil, "version"); short != long {
		t.Errorf("mica version %q differs from mica --version %q", short, long)
	}
}

// TestCLIFixes runs the CLI fixes of the README path against one server:
// root-crl signs over its own file, --log-key takes what GET
// /v1/audit/key answers, and cert inspect gives each issuer its own expiry.
func TestCLIFixes(t *testing.T) {
	e := newTestEnv(t, "sqlite")

	t.Run("root-crl twice", func(t *testing.T) {
		path := filepath.Join(e.dataDir, "ca", RootCRLFile)
		var numbers []string
		for range 2 {
			e.micaOK("ca", "root-crl", "--validity", "30d")
			der, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			crl, err := x509.ParseRevocationList(der)
			if err != nil {
				t.Fatal(err)
			}
			numbers = append(numbers, crl.Number.String())
			if len(numbers) == 2 && crl.Number.Cmp(mustBig(t, numbers[0])) <= 0 {
				t.Errorf("the second root CRL's number %s does not pass the first's %s", numbers[1], numbers[0])
			}
		}
		other := filepath.Join(t.TempDir(), "notes.txt")
		os.WriteFile(other, []byte("not a CRL"), 0o644)
		if r := e.mica("ca", "root-crl", "--out", other); r.code != 1 || !strings.Contains(r.stderr, "not a CRL of this root") {
			t.Errorf("root-crl over another file: exit %d, %s", r.code, r.stderr)
		}
		if data, _ := os.ReadFile(other); string(data) != "not a CRL" {
			t.Error("root-crl replaced a file that was not its CRL")
		}
	})

	t.Run("log-key from GET /v1/audit/key", func(t *testing.T) {
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfigFor(e.roots)}}
		resp, err := hc.Get(e.server.url + "/v1/audit/key")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if out := e.micaOK("audit", "verify", "--log-key", string(body)); !strings.Contains(out, "verified") {
			t.Errorf("verify with the JSON answer as --log-key: %s", out)
		}
		keyFile := filepath.Join(t.TempDir(), "audit-key.json")
		os.WriteFile(keyFile, body, 0o644)
		if out := e.micaOK("audit", "verify", "--log-key", keyFile); !strings.Contains(out, "verified") {
			t.Errorf("verify with the answer saved to a file: %s", out)
		}
		if r := e.mica("audit", "verify", "--log-key", "nonsense"); r.code != 2 || !strings.Contains(r.stderr, "verifier_key") {
			t.Errorf("a bad --log-key: exit %d, %s", r.code, r.stderr)
		}
	})

	t.Run("cert inspect", func(t *testing.T) {
		dir := e.issue("spiffe://example.org/billing/inspected", "service")
		out := e.micaOK("cert", "inspect", filepath.Join(dir, certFile))
		inter := readPEMCert(t, filepath.Join(e.dataDir, "ca", "intermediate.pem"))
		root := readPEMCert(t, filepath.Join(e.dataDir, "ca", "root.pem"))
		for _, c := range []*x509.Certificate{inter, root} {
			want := c.Subject.String() + "  (expires " + c.NotAfter.UTC().Format("2006-01-02") + ")"
			if !strings.Contains(out, want) {
				t.Errorf("inspect does not show %q:\n%s", want, out)
			}
		}
		leaf := readLeaf(t, dir)
		if strings.Contains(out, inter.Subject.String()+"  (expires "+leaf.NotAfter.UTC().Format("2006-01-02")+")") &&
			leaf.NotAfter.Format("2006-01-02") != inter.NotAfter.Format("2006-01-02") {
			t.Errorf("inspect gives the intermediate the leaf's expiry:\n%s", out)
		}
	})
}

func readPEMCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := credential.ParseCertificates(data)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0]
}

func mustBig(t *testing.T, s string) *big.Int {
	t.Helper()
	n, ok := new(big.Int).SetString(s, 10)
	if !ok {
		t.Fatalf("%q is not a number", s)
	}
	return n
}
