package agent

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/testpki"
)

func TestWriteAndLoadCredential(t *testing.T) {
	pki := testpki.New(t, "example.org")
	id, _ := identity.Parse("spiffe://example.org/billing/api")
	leaf := pki.Leaf(t, id, testpki.WithTTL(time.Hour))
	cred, err := newCredential(append([]*x509.Certificate{leaf.Cert}, leaf.Chain...), leaf.Key, []*x509.Certificate{pki.Root})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tests := []struct {
		name  string
		files Files
		key   string
	}{
		{"defaults", Files{Dir: filepath.Join(dir, "a"), UID: -1, GID: -1}, filepath.Join(dir, "a", "key.pem")},
		{"moved key, own ids as owner", Files{Dir: filepath.Join(dir, "b"), Key: filepath.Join(dir, "elsewhere", "tls.key"),
			UID: os.Getuid(), GID: os.Getgid()}, filepath.Join(dir, "elsewhere", "tls.key")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.files.withDefaults()
			if err := f.writeCredential(cred); err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(tt.key)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("key mode %o, want 600", st.Mode().Perm())
			}
			if sys := st.Sys().(*syscall.Stat_t); tt.files.UID != -1 && int(sys.Uid) != tt.files.UID {
				t.Errorf("key owner %d, want %d", sys.Uid, tt.files.UID)
			}
			back, err := f.loadCredential()
			if err != nil {
				t.Fatal(err)
			}
			if !back.Chain[0].Equal(leaf.Cert) || len(back.Chain) != 2 || len(back.Roots) != 1 || back.ID != "spiffe://example.org/billing/api" {
				t.Errorf("loaded %+v", back)
			}
		})
	}
}
