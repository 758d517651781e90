package credential_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/mica-pki/mica/credential"
	"github.com/mica-pki/mica/internal/atomicfile"
	"github.com/mica-pki/mica/internal/testpki"
)

// newCredential issues a fresh credential from pki.
func newCredential(t testing.TB, pki *testpki.PKI) *credential.Credential {
	t.Helper()
	l := pki.Leaf(t, pki.ID(t, "/billing/api"))
	c, err := credential.New(append([]*x509.Certificate{l.Cert}, l.Chain...), l.Key, []*x509.Certificate{pki.Root})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func sameCredential(a, b *credential.Credential) bool {
	return a != nil && b != nil && a.Leaf().Equal(b.Leaf()) && len(a.Chain) == len(b.Chain) && len(a.Roots) == len(b.Roots)
}

// versions lists the version directories in dir.
func versions(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") && e.Name() != credential.DataLink {
			out = append(out, e.Name())
		}
		if atomicfile.IsTemp(e.Name()) {
			t.Errorf("temporary file left in %s: %s", dir, e.Name())
		}
	}
	return out
}

func TestWriteAndLoad(t *testing.T) {
	pki := testpki.New(t, "example.org")
	base := t.TempDir()
	d := credential.Dir{Path: filepath.Join(base, "cred"), Copies: credential.Files{Key: filepath.Join(base, "nginx", "tls.key")},
		Owner: &credential.Owner{UID: os.Getuid(), GID: os.Getgid()}}
	first, second := newCredential(t, pki), newCredential(t, pki)
	for i, c := range []*credential.Credential{first, second} {
		if err := d.Write(c); err != nil {
			t.Fatal(err)
		}
		back, err := d.Load()
		if err != nil || !sameCredential(back, c) {
			t.Fatalf("write %d: Load = %v, %v", i, back, err)
		}
		// Through the documented names and the extra link too.
		named, err := credential.In(d.Path).Read()
		if err != nil || !sameCredential(named, c) {
			t.Fatalf("write %d: reading by name: %v", i, err)
		}
		want, _ := credential.EncodePrivateKey(c.Key)
		if k, err := os.ReadFile(d.Copies.Key); err != nil || string(k) != string(want) {
			t.Fatalf("write %d: the copy of the key is not the key written (%v)", i, err)
		}
		if st, err := os.Lstat(d.Copies.Key); err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o600 {
			t.Fatalf("write %d: the copy of the key is not a plain 0600 file: %v", i, st.Mode())
		}
		if vs := versions(t, d.Path); len(vs) != 1 {
			t.Fatalf("write %d left versions %v, want only the current one", i, vs)
		}
	}
	for _, name := range []string{credential.KeyFile, credential.CertFile, credential.ChainFile, credential.FullchainFile, credential.BundleFile} {
		p := filepath.Join(d.Path, name)
		target, err := os.Readlink(p)
		if err != nil || target != filepath.Join(credential.DataLink, name) {
			t.Errorf("%s is not a link through ..data: %q, %v", name, target, err)
		}
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		want := os.FileMode(0o644)
		if name == credential.KeyFile {
			want = 0o600
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s has mode %o, want %o", name, st.Mode().Perm(), want)
		}
		if uid := st.Sys().(*syscall.Stat_t).Uid; int(uid) != os.Getuid() {
			t.Errorf("%s owned by %d", name, uid)
		}
	}
	if err := d.Write(&credential.Credential{Chain: second.Chain, Key: first.Key}); !errors.Is(err, credential.ErrMismatch) {
		t.Fatalf("writing a key with another key's certificate: %v, want ErrMismatch", err)
	}
	if back, _ := d.Load(); !sameCredential(back, second) {
		t.Fatal("a refused write changed the credential")
	}
	if _, err := (credential.Dir{Path: filepath.Join(base, "none")}).Load(); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load of an empty directory: %v, want fs.ErrNotExist", err)
	}
}

// writePlain writes a credential the way mica did before versioned
// directories: plain files replaced one by one.
func writePlain(t *testing.T, files credential.Files, c *credential.Credential) {
	t.Helper()
	key, _ := credential.EncodePrivateKey(c.Key)
	for _, f := range []struct {
		path string
		data []byte
	}{
		{files.Cert, credential.EncodeCertificates(c.Chain[:1])},
		{files.Chain, credential.EncodeCertificates(c.Chain[1:])},
		{files.Fullchain, credential.EncodeCertificates(c.Chain)},
		{files.Bundle, credential.EncodeCertificates(c.Roots)},
		{files.Key, key},
	} {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := atomicfile.Write(f.path, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAdoptsPlainDirectory: a directory written by an older mica (plain
// files, a key moved elsewhere by the agent's files setting) is read as it
// is and becomes versioned at the next write.
func TestAdoptsPlainDirectory(t *testing.T) {
	pki := testpki.New(t, "example.org")
	base := t.TempDir()
	d := credential.Dir{Path: filepath.Join(base, "cred"), Copies: credential.Files{Key: filepath.Join(base, "moved", "key.pem")}}
	old := newCredential(t, pki)
	plain := credential.In(d.Path)
	plain.Key = d.Copies.Key
	writePlain(t, plain, old)
	if got, err := d.Load(); err != nil || !sameCredential(got, old) {
		t.Fatalf("Load of the plain directory: %v", err)
	}
	renewed := newCredential(t, pki)
	if err := d.Write(renewed); err != nil {
		t.Fatal(err)
	}
	if got, err := d.Load(); err != nil || !sameCredential(got, renewed) {
		t.Fatalf("Load after the first write: %v", err)
	}
	if fi, err := os.Lstat(filepath.Join(d.Path, credential.CertFile)); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("cert.pem is still a plain file after adoption (%v)", err)
	}
	want, _ := credential.EncodePrivateKey(renewed.Key)
	if k, err := os.ReadFile(d.Copies.Key); err != nil || string(k) != string(want) {
		t.Errorf("the moved key was not brought up to date (%v)", err)
	}
	if vs := versions(t, d.Path); len(vs) != 1 {
		t.Errorf("versions after adoption and one write: %v", vs)
	}
}

// TestReaderNeverSeesMismatch: a reader looping on Load while another
// goroutine writes 200 credentials (40 in the unit layer, where the
// reader's thousands of loads still cross every switch) always gets a
// matching pair.
func TestReaderNeverSeesMismatch(t *testing.T) {
	pki := testpki.New(t, "example.org")
	d := credential.Dir{Path: filepath.Join(t.TempDir(), "cred")}
	n := 200
	if testing.Short() {
		n = 40
	}
	creds := make([]*credential.Credential, n)
	for i := range creds {
		creds[i] = newCredential(t, pki)
	}
	if err := d.Write(creds[0]); err != nil {
		t.Fatal(err)
	}
	var done atomic.Bool
	var reads, failures, byName, byNameMismatch atomic.Int64
	var firstErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		for !done.Load() {
			reads.Add(1)
			c, err := d.Load()
			if err == nil && (len(c.Chain) != 2 || len(c.Roots) != 1) {
				err = fmt.Errorf("an incomplete credential: %d certificates, %d roots", len(c.Chain), len(c.Roots))
			}
			if err != nil && failures.Add(1) == 1 {
				firstErr = err
			}
			// What a program that opens the names one by one gets, for
			// the record (not a guarantee the layout can give).
			byName.Add(1)
			if _, err := credential.In(d.Path).Read(); errors.Is(err, credential.ErrMismatch) {
				byNameMismatch.Add(1)
			}
		}
	})
	for _, c := range creds[1:] {
		if err := d.Write(c); err != nil {
			t.Fatal(err)
		}
	}
	done.Store(true)
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d of %d reads failed across %d switches; first: %v", failures.Load(), reads.Load(), len(creds)-1, firstErr)
	}
	t.Logf("figures: %d Load calls, none failed, across %d switches; reading by name one file after the other: %d of %d reads mismatched",
		reads.Load(), len(creds)-1, byNameMismatch.Load(), byName.Load())
}

// The crash tests run this test binary again as a child that writes one
// credential and kills itself with SIGKILL after step N of the write.
const (
	crashEnvDir  = "CREDENTIAL_TEST_CRASH_DIR"
	crashEnvStep = "CREDENTIAL_TEST_CRASH_STEP"
	crashEnvLink = "CREDENTIAL_TEST_CRASH_LINK"
	crashEnvFrom = "CREDENTIAL_TEST_CRASH_FROM"
)

// TestCrashHelperProcess is the child: it is a no-op in a normal run.
func TestCrashHelperProcess(t *testing.T) {
	dir := os.Getenv(crashEnvDir)
	if dir == "" {
		t.Skip("the crash tests' child process")
	}
	n, _ := strconv.Atoi(os.Getenv(crashEnvStep))
	steps := 0
	credential.SetAfterStep(func(step string) {
		if steps++; steps == n {
			fmt.Fprintf(os.Stderr, "crashing after step %d: %s\n", n, step)
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	})
	next, err := credential.Dir{Path: os.Getenv(crashEnvFrom)}.Load()
	if err != nil {
		t.Fatal(err)
	}
	if err := (credential.Dir{Path: dir, Copies: credential.Files{Key: os.Getenv(crashEnvLink)}}).Write(next); err != nil {
		t.Fatal(err)
	}
}

// TestCrashAtEveryStep kills a real writer process after each durable step
// of a write (a new directory, a settled one, a directory of plain files
// from an older mica, one with a moved key) and checks that what is left
// reads as the previous credential or the new one, by Load and by name,
// and that a repair and a next write work.
func TestCrashAtEveryStep(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a child process per step")
	}
	pki := testpki.New(t, "example.org")
	scenarios := []struct {
		name     string
		prepare  func(t *testing.T, d credential.Dir, c *credential.Credential)
		minSteps int
	}{
		{"new directory", func(*testing.T, credential.Dir, *credential.Credential) {}, 12},
		{"versioned", func(t *testing.T, d credential.Dir, c *credential.Credential) {
			if err := d.Write(c); err != nil {
				t.Fatal(err)
			}
		}, 8},
		{"plain files", func(t *testing.T, d credential.Dir, c *credential.Credential) {
			writePlain(t, credential.In(d.Path), c)
		}, 20},
		{"plain files, moved key", func(t *testing.T, d credential.Dir, c *credential.Credential) {
			f := credential.In(d.Path)
			f.Key = d.Copies.Key
			writePlain(t, f, c)
		}, 21},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			next := newCredential(t, pki)
			from := credential.Dir{Path: filepath.Join(t.TempDir(), "next")}
			if err := from.Write(next); err != nil {
				t.Fatal(err)
			}
			for n := 1; ; n++ {
				base := t.TempDir()
				d := credential.Dir{Path: filepath.Join(base, "cred")}
				if strings.Contains(sc.name, "moved") {
					d.Copies.Key = filepath.Join(base, "moved", "key.pem")
				}
				prev := newCredential(t, pki)
				sc.prepare(t, d, prev)
				cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelperProcess$")
				cmd.Env = append(os.Environ(), crashEnvDir+"="+d.Path, crashEnvStep+"="+strconv.Itoa(n),
					crashEnvFrom+"="+from.Path, crashEnvLink+"="+d.Copies.Key)
				out, err := cmd.CombinedOutput()
				if err == nil {
					if n-1 < sc.minSteps {
						t.Fatalf("the write finished after %d steps, want at least %d", n-1, sc.minSteps)
					}
					t.Logf("crashed after each of %d steps", n-1)
					checkAfterCrash(t, d, nil, next, n)
					return
				}
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
					t.Fatalf("step %d: the child failed without crashing: %v\n%s", n, err, out)
				}
				before := prev
				if sc.name == "new directory" {
					before = nil
				}
				checkAfterCrash(t, d, before, next, n)
			}
		})
	}
}

// checkAfterCrash: Load gives prev or next (nothing only where there was
// nothing before), reading by name never mismatches, Repair leaves the
// names agreeing with Load, and a new write lands cleanly.
func checkAfterCrash(t *testing.T, d credential.Dir, prev, next *credential.Credential, n int) {
	t.Helper()
	got, err := d.Load()
	switch {
	case err == nil && (sameCredential(got, prev) || sameCredential(got, next)):
	case errors.Is(err, fs.ErrNotExist) && prev == nil:
	default:
		t.Fatalf("after a crash at step %d: Load = %v, %v; want the previous or the new credential", n, got, err)
	}
	if named, err := credential.In(d.Path).Read(); err == nil && !sameCredential(named, got) {
		t.Fatalf("after a crash at step %d: reading by name gives another credential than Load", n)
	} else if errors.Is(err, credential.ErrMismatch) {
		t.Fatalf("after a crash at step %d: the names hold a mismatched pair: %v", n, err)
	}
	if err := d.Repair(); err != nil {
		t.Fatalf("repair after step %d: %v", n, err)
	}
	if got != nil && d.Copies.Key != "" {
		want, _ := credential.EncodePrivateKey(got.Key)
		if k, err := os.ReadFile(d.Copies.Key); err != nil || string(k) != string(want) {
			t.Fatalf("after a crash at step %d and a repair, the copy of the key is not the current key (%v)", n, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(d.Path, credential.DataLink)); err == nil {
		if named, err := credential.In(d.Path).Read(); err != nil || !sameCredential(named, got) {
			t.Fatalf("after a crash at step %d and a repair, the names do not show what Load does: %v", n, err)
		}
	}
	third := newCredential(t, testpki.New(t, "example.org"))
	if err := d.Write(third); err != nil {
		t.Fatalf("writing after a crash at step %d: %v", n, err)
	}
	if back, err := d.Load(); err != nil || !sameCredential(back, third) {
		t.Fatalf("after a crash at step %d, the next write did not take: %v", n, err)
	}
	if vs := versions(t, d.Path); len(vs) != 1 {
		t.Fatalf("after a crash at step %d and a write: versions %v", n, vs)
	}
}

// TestPendingKey: the key of an enrollment in progress survives a restart
// (a second call returns it) and is gone once a credential is written.
func TestPendingKey(t *testing.T) {
	pki := testpki.New(t, "example.org")
	d := credential.Dir{Path: filepath.Join(t.TempDir(), "cred")}
	made := 0
	gen := func() (crypto.Signer, error) {
		made++
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	first, err := d.PendingKey(gen)
	if err != nil {
		t.Fatal(err)
	}
	again, err := d.PendingKey(gen)
	if err != nil || made != 1 || !again.Public().(*ecdsa.PublicKey).Equal(first.Public()) {
		t.Fatalf("the pending key was not kept: made %d keys (%v)", made, err)
	}
	if st, err := os.Stat(filepath.Join(d.Path, credential.PendingKeyFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("pending key file: %v, %v", st, err)
	}
	l := pki.Leaf(t, pki.ID(t, "/billing/api"), testpki.WithKey(first))
	c, err := credential.New(append([]*x509.Certificate{l.Cert}, l.Chain...), first, []*x509.Certificate{pki.Root})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Write(c); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(d.Path, credential.PendingKeyFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the pending key outlived the write: %v", err)
	}
}
