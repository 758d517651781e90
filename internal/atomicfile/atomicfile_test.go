package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteCreateModes(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key.pem")
	if err := Create(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Create(p, []byte("two"), 0o600); !errors.Is(err, ErrExists) {
		t.Fatalf("Create over an existing file: err = %v, want ErrExists", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "one" {
		t.Fatalf("refused Create changed the file to %q", b)
	}
	if err := Write(p, []byte("three"), 0o600); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %v, want 0600", fi.Mode().Perm())
	}
	if b, _ := os.ReadFile(p); string(b) != "three" {
		t.Fatalf("content = %q, want three", b)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
}

func TestSymlinkReplaces(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"a", "b"} {
		if err := Write(filepath.Join(dir, name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(dir, "current")
	// Over a plain file, then over a link: both are replaced in one rename.
	if err := Write(link, []byte("plain"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"a", "b"} {
		if err := Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		if got, err := os.Readlink(link); err != nil || got != target {
			t.Fatalf("link points at %q (%v), want %q", got, err, target)
		}
		if b, _ := os.ReadFile(link); string(b) != target {
			t.Fatalf("reading through the link: %q, want %q", b, target)
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if IsTemp(e.Name()) {
			t.Errorf("temporary name left behind: %s", e.Name())
		}
	}
	if len(entries) != 3 {
		t.Errorf("directory holds %d entries, want a, b and current", len(entries))
	}
}

func TestIsTemp(t *testing.T) {
	for name, want := range map[string]bool{
		".key.pem.tmp-123": true, "...data.tmp-9": true, "key.pem": false, ".hidden": false, "a.tmp-1": false,
	} {
		if got := IsTemp(name); got != want {
			t.Errorf("IsTemp(%q) = %v, want %v", name, got, want)
		}
	}
}
