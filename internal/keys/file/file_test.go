package file

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/testlayer"
)

var testPass = []byte("correct horse battery staple")

type publicKey interface{ Equal(crypto.PublicKey) bool }

func samePublic(a, b crypto.PublicKey) bool { return a.(publicKey).Equal(b) }

func TestRoundTrip(t *testing.T) {
	for _, alg := range keys.Algorithms() {
		t.Run(string(alg), func(t *testing.T) {
			key, err := keys.Generate(alg, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			enc := filepath.Join(dir, "ca.key")
			if err := Write(enc, key, testPass); err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(enc)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("mode = %04o, want 0600", st.Mode().Perm())
			}
			pemText, _ := os.ReadFile(enc)
			if !bytes.Contains(pemText, []byte("-----BEGIN ENCRYPTED "+"PRIVATE KEY-----")) {
				t.Errorf("file is not an encrypted PKCS#8 PEM:\n%s", pemText)
			}
			got, err := Load(enc, testPass)
			if err != nil {
				t.Fatal(err)
			}
			if !samePublic(got.Public(), key.Public()) {
				t.Error("loaded key differs from written key")
			}

			plain := filepath.Join(dir, "leaf.key")
			if err := WritePlain(plain, key); err != nil {
				t.Fatal(err)
			}
			got, err = LoadPlain(plain)
			if err != nil {
				t.Fatal(err)
			}
			if !samePublic(got.Public(), key.Public()) {
				t.Error("loaded plain key differs from written key")
			}
		})
	}
}

func TestOpenSSLReadsEncryptedKey(t *testing.T) {
	openssl := testlayer.Tool(t, "openssl")
	key, _ := keys.Generate(keys.ECDSAP256, rand.Reader)
	path := filepath.Join(t.TempDir(), "ca.key")
	if err := Write(path, key, testPass); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(openssl, "pkey", "-in", path, "-passin", "pass:"+string(testPass), "-noout", "-text").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl pkey: %v\n%s", err, out)
	}
	out, err = exec.Command(openssl, "pkey", "-in", path, "-passin", "pass:wrong", "-noout").CombinedOutput()
	if err == nil {
		t.Fatalf("openssl accepted a wrong passphrase:\n%s", out)
	}
}

func TestLoadRefusals(t *testing.T) {
	key, _ := keys.Generate(keys.ECDSAP256, rand.Reader)
	dir := t.TempDir()
	enc := filepath.Join(dir, "ca.key")
	if err := Write(enc, key, testPass); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "leaf.key")
	if err := WritePlain(plain, key); err != nil {
		t.Fatal(err)
	}
	loose := filepath.Join(dir, "loose.key")
	if err := Write(loose, key, testPass); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(loose, 0o644); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.key")
	if err := os.WriteFile(garbage, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		load     func() error
		is       error
		contains string
	}{
		{"wrong passphrase", func() error { _, err := Load(enc, []byte("wrong")); return err }, ErrWrongPassphrase, "wrong passphrase"},
		{"empty passphrase", func() error { _, err := Load(enc, nil); return err }, ErrEmptyPassphrase, "give its passphrase"},
		{"unencrypted as CA key", func() error { _, err := Load(plain, testPass); return err }, nil, "must be encrypted"},
		{"encrypted as plain key", func() error { _, err := LoadPlain(enc); return err }, nil, "ENCRYPTED PRIVATE KEY"},
		{"mode 0644", func() error { _, err := Load(loose, testPass); return err }, nil, "chmod 600 " + loose},
		{"mode 0644 plain", func() error { _, err := LoadPlain(loose); return err }, nil, "chmod 600"},
		{"not PEM", func() error { _, err := Load(garbage, testPass); return err }, nil, "no PEM block"},
		{"missing", func() error { _, err := Load(filepath.Join(dir, "nope.key"), testPass); return err }, os.ErrNotExist, "nope.key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.load()
			if err == nil {
				t.Fatal("want an error")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("err = %v, want errors.Is %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("err = %q, want it to mention %q", err, tt.contains)
			}
			if !strings.HasPrefix(err.Error(), "keys/file: ") {
				t.Errorf("err = %q, want the package prefix", err)
			}
			if strings.Contains(err.Error(), string(testPass)) {
				t.Errorf("err = %q leaks the passphrase", err)
			}
		})
	}
	var perr *PermissionError
	if _, err := Load(loose, testPass); !errors.As(err, &perr) || perr.Mode.Perm() != 0o644 {
		t.Errorf("err = %v, want *PermissionError with mode 0644", err)
	}
}

func TestOverwriteRules(t *testing.T) {
	k1, _ := keys.Generate(keys.ECDSAP256, rand.Reader)
	k2, _ := keys.Generate(keys.ECDSAP256, rand.Reader)
	tests := []struct {
		name    string
		write   func(path string, k crypto.Signer) error
		replace func(path string, k crypto.Signer) error
		load    func(path string) (crypto.Signer, error)
	}{
		{
			name:    "encrypted",
			write:   func(p string, k crypto.Signer) error { return Write(p, k, testPass) },
			replace: func(p string, k crypto.Signer) error { return Replace(p, k, testPass) },
			load:    func(p string) (crypto.Signer, error) { return Load(p, testPass) },
		},
		{
			name:    "plain",
			write:   WritePlain,
			replace: ReplacePlain,
			load:    LoadPlain,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "k.key")
			if err := tt.write(path, k1); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(path)
			if err := tt.write(path, k2); !errors.Is(err, ErrExists) {
				t.Fatalf("second write err = %v, want ErrExists", err)
			}
			after, _ := os.ReadFile(path)
			if !bytes.Equal(before, after) {
				t.Fatal("refused write changed the file")
			}
			if err := tt.replace(path, k2); err != nil {
				t.Fatal(err)
			}
			got, err := tt.load(path)
			if err != nil {
				t.Fatal(err)
			}
			if !samePublic(k2.Public(), got.Public()) {
				t.Error("replace did not install the new key")
			}
			st, _ := os.Stat(path)
			if st.Mode().Perm() != 0o600 {
				t.Errorf("mode after replace = %04o, want 0600", st.Mode().Perm())
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				t.Errorf("directory holds %v, want only the key (no temporary files left)", names)
			}
		})
	}
}

func TestWriteRefusesEmptyPassphrase(t *testing.T) {
	key, _ := keys.Generate(keys.ECDSAP256, rand.Reader)
	path := filepath.Join(t.TempDir(), "ca.key")
	if err := Write(path, key, nil); !errors.Is(err, ErrEmptyPassphrase) {
		t.Fatalf("err = %v, want ErrEmptyPassphrase", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Error("a refused write left a file behind")
	}
}

func TestPassphrase(t *testing.T) {
	dir := t.TempDir()
	withNL := filepath.Join(dir, "pass-nl")
	os.WriteFile(withNL, []byte("s3cret\n"), 0o600)
	withCRLF := filepath.Join(dir, "pass-crlf")
	os.WriteFile(withCRLF, []byte("s3cret\r\n"), 0o600)
	empty := filepath.Join(dir, "pass-empty")
	os.WriteFile(empty, []byte("\n"), 0o600)

	tests := []struct {
		name     string
		file     string
		env      string // value of MICA_TEST_PASS; "-" leaves it unset
		want     string
		contains string
	}{
		{"file trims newline", withNL, "-", "s3cret", ""},
		{"file trims crlf", withCRLF, "-", "s3cret", ""},
		{"file wins over env", withNL, "fromenv", "s3cret", ""},
		{"env", "", "fromenv", "fromenv", ""},
		{"empty file", empty, "-", "", "is empty"},
		{"missing file", filepath.Join(dir, "nope"), "-", "", "passphrase file"},
		{"nothing set", "", "-", "", "set the MICA_TEST_PASS environment variable"},
		{"empty env", "", "", "", "MICA_TEST_PASS environment variable is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env == "-" {
				t.Setenv("MICA_TEST_PASS", "")
				os.Unsetenv("MICA_TEST_PASS")
			} else {
				t.Setenv("MICA_TEST_PASS", tt.env)
			}
			got, err := Passphrase(tt.file, "MICA_TEST_PASS")
			if tt.contains != "" {
				if err == nil || !strings.Contains(err.Error(), tt.contains) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.contains)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
