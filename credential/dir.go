package credential

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mica-pki/mica/internal/atomicfile"
)

// Dir is a credential directory: the five files, switched together.
type Dir struct {
	// Path is the directory.
	Path string
	// Copies are more paths that get a copy of one file each, for services
	// that expect them elsewhere (Copies.Key = "/etc/nginx/tls/key.pem")
	// and may not be able to enter Path. They are plain files, written
	// after the switch, the key last, and refreshed by Repair: a service
	// that reads them should do so when its reload hook runs. Empty fields
	// make no copy.
	Copies Files
	// Owner, when set, owns the files written (the private key stays
	// mode 0600), so a service running as another user can read its key.
	Owner *Owner
}

// Owner is a numeric user and group; -1 leaves either unchanged.
type Owner struct{ UID, GID int }

// loadAttempts bounds how often Load resolves ..data again when the
// version it resolved was removed under it by a concurrent Write.
const loadAttempts = 8

// Load reads the current credential. In a versioned directory it resolves
// ..data once and reads every file from that version, so the key always
// matches the certificate; a directory of plain files (older versions of
// mica) is read file by file. No credential at all gives an error wrapping
// fs.ErrNotExist.
func (d Dir) Load() (*Credential, error) {
	for attempt := 1; ; attempt++ {
		ver, err := os.Readlink(d.dataLink())
		if errors.Is(err, fs.ErrNotExist) {
			return d.plainFiles().Read()
		}
		if err != nil {
			return nil, fmt.Errorf("credential: %w", err)
		}
		c, err := In(d.resolve(ver)).read(true)
		if errors.Is(err, fs.ErrNotExist) && attempt < loadAttempts {
			continue // a Write switched and removed this version meanwhile
		}
		return c, err
	}
}

// Write makes c the directory's credential: a new version with all five
// files, each written and fsynced, then one rename of ..data, then the
// links, then the old version removed. Readers see the previous credential
// or c, never a mix, and so does whoever reads after a crash at any point.
// A directory of plain files is adopted first (see the package comment).
// Write is not safe for concurrent use on one directory.
func (d Dir) Write(c *Credential) error {
	files, err := c.files()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(d.Path, 0o755); err != nil {
		return fmt.Errorf("credential: creating %s: %w", d.Path, err)
	}
	if err := d.adopt(); err != nil {
		return err
	}
	if err := d.install(files); err != nil {
		return err
	}
	return d.dropPendingKey()
}

// Repair finishes what a Write interrupted by a crash left undone: links
// that are missing or point elsewhere, copies that lag behind, and versions
// and temporary files that are no longer current. It changes nothing in a directory that needs
// nothing, nor in a directory of plain files (the next Write adopts those).
func (d Dir) Repair() error {
	ver, err := os.Readlink(d.dataLink())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("credential: %w", err)
	}
	if err := d.link(ver); err != nil {
		return err
	}
	if err := d.copy(ver); err != nil {
		return err
	}
	return d.tidy(ver)
}

// PendingKeyFile holds the key of an enrollment in progress (see
// Dir.PendingKey); it is not part of any version.
const PendingKeyFile = ".pending-key.pem"

// PendingKey returns the key kept for an enrollment in progress, or makes
// one with generate and keeps it (mode 0600, fsynced) before returning it.
// An enrollment retried after a lost response or a crash then asks with
// the same key, and the server answers a token it already took with the
// certificate that token paid for, instead of refusing it as replayed.
// Write removes the pending key once a credential is in place.
func (d Dir) PendingKey(generate func() (crypto.Signer, error)) (crypto.Signer, error) {
	p := filepath.Join(d.Path, PendingKeyFile)
	if data, err := readFile(p, true); err == nil {
		if key, err := ParsePrivateKey(data); err == nil {
			return key, nil
		}
	}
	key, err := generate()
	if err != nil {
		return nil, err
	}
	data, err := EncodePrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(d.Path, 0o755); err != nil {
		return nil, fmt.Errorf("credential: creating %s: %w", d.Path, err)
	}
	if err := atomicfile.Write(p, data, 0o600); err != nil {
		return nil, fmt.Errorf("credential: %w", err)
	}
	step("keep pending key")
	return key, nil
}

// dropPendingKey removes the pending key once a credential is in place.
func (d Dir) dropPendingKey() error {
	err := os.Remove(filepath.Join(d.Path, PendingKeyFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("credential: %w", err)
	}
	step("remove pending key")
	return nil
}

// file is one file of a version.
type file struct {
	name string
	data []byte
	perm fs.FileMode
}

func (c *Credential) files() ([]file, error) {
	if len(c.Chain) == 0 || c.Key == nil {
		return nil, errors.New("credential: nothing to write: a credential needs a certificate and its key")
	}
	if _, err := New(c.Chain, c.Key, c.Roots); err != nil {
		return nil, err
	}
	key, err := EncodePrivateKey(c.Key)
	if err != nil {
		return nil, err
	}
	leaf, chain := EncodeCertificates(c.Chain[:1]), EncodeCertificates(c.Chain[1:])
	return []file{
		{KeyFile, key, 0o600},
		{CertFile, leaf, 0o644},
		{ChainFile, chain, 0o644},
		{FullchainFile, append(append([]byte{}, leaf...), chain...), 0o644},
		{BundleFile, EncodeCertificates(c.Roots), 0o644},
	}, nil
}

// adopt turns a directory of plain files into a versioned one holding the
// same bytes: a version with their content, ..data, then each name replaced
// by a link. At every step each name reads as before.
func (d Dir) adopt() error {
	if _, err := os.Lstat(d.dataLink()); err == nil {
		return nil
	}
	var files []file
	found := false
	plain := d.plainFiles()
	for _, n := range names {
		f := file{name: n, perm: 0o644}
		if n == KeyFile {
			f.perm = 0o600
		}
		p := plain.path(n)
		if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() {
			if f.data, err = readFile(p, true); err != nil {
				return err
			}
			f.perm, found = fi.Mode().Perm(), true
		}
		// A version holds all five files; one the old directory lacked
		// is empty, which reads as none.
		files = append(files, f)
	}
	if !found {
		return nil // a new directory
	}
	return d.install(files)
}

// install writes files as a new version and switches to it.
func (d Dir) install(files []file) error {
	ver, err := d.writeVersion(files)
	if err != nil {
		return err
	}
	if err := atomicfile.Symlink(ver, d.dataLink()); err != nil {
		os.RemoveAll(filepath.Join(d.Path, ver))
		return fmt.Errorf("credential: switching to the new version: %w", err)
	}
	step("switch " + DataLink)
	if err := d.link(ver); err != nil {
		return err
	}
	if err := d.copy(ver); err != nil {
		return err
	}
	return d.tidy(ver)
}

// versionPrefix starts the name of every version directory; the time in it
// is for people reading the directory, the random suffix makes it unique.
const versionLayout = "..2006_01_02_15_04_05."

func isVersion(name string) bool {
	return len(name) > 2 && strings.HasPrefix(name, "..") && name[2] >= '0' && name[2] <= '9'
}

func (d Dir) writeVersion(files []file) (string, error) {
	dir, err := os.MkdirTemp(d.Path, time.Now().UTC().Format(versionLayout)+"*")
	if err != nil {
		return "", fmt.Errorf("credential: cannot write in %s: %w", d.Path, err)
	}
	fail := func(err error) (string, error) {
		os.RemoveAll(dir)
		return "", err
	}
	// Readable by the service's user; the key inside is 0600.
	if err := os.Chmod(dir, 0o755); err != nil {
		return fail(fmt.Errorf("credential: %w", err))
	}
	if err := atomicfile.SyncDir(d.Path); err != nil {
		return fail(err)
	}
	step("make version")
	uid, gid := -1, -1
	if d.Owner != nil {
		uid, gid = d.Owner.UID, d.Owner.GID
	}
	for _, f := range files {
		if err := atomicfile.WriteOwned(filepath.Join(dir, f.name), f.data, f.perm, uid, gid); err != nil {
			return fail(fmt.Errorf("credential: %w", err))
		}
		step("write " + f.name)
	}
	return filepath.Base(dir), nil
}

// link points each name in Path through ..data, for the files version ver
// holds. The key goes last, so that in a new directory whoever finds the
// key by name finds every other file too.
func (d Dir) link(ver string) error {
	for i := range names {
		n := names[len(names)-1-i]
		if _, err := os.Stat(filepath.Join(d.resolve(ver), n)); err != nil {
			continue // not in a version directory that was damaged by hand
		}
		if err := ensureLink(filepath.Join(d.Path, n), filepath.Join(DataLink, n)); err != nil {
			return err
		}
	}
	return nil
}

// copy brings each of Copies up to date with version ver, the key last.
func (d Dir) copy(ver string) error {
	uid, gid := -1, -1
	if d.Owner != nil {
		uid, gid = d.Owner.UID, d.Owner.GID
	}
	for i := range names {
		n := names[len(names)-1-i]
		dst := d.Copies.path(n)
		if dst == "" {
			continue
		}
		src := filepath.Join(d.resolve(ver), n)
		data, err := readFile(src, true)
		if err != nil {
			return err
		}
		if old, err := os.ReadFile(dst); err == nil && bytes.Equal(old, data) {
			continue
		}
		perm := fs.FileMode(0o644)
		if n == KeyFile {
			perm = 0o600
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("credential: creating the directory of %s: %w", dst, err)
		}
		if err := atomicfile.WriteOwned(dst, data, perm, uid, gid); err != nil {
			return fmt.Errorf("credential: %w", err)
		}
		step("copy " + dst)
	}
	return nil
}

func ensureLink(path, target string) error {
	if cur, err := os.Readlink(path); err == nil && cur == target {
		return nil
	}
	if err := atomicfile.Symlink(target, path); err != nil {
		return fmt.Errorf("credential: %w", err)
	}
	step("link " + path)
	return nil
}

// tidy removes every version but the current one, and the temporary files
// and links a crashed write left.
func (d Dir) tidy(current string) error {
	entries, err := os.ReadDir(d.Path)
	if err != nil {
		return fmt.Errorf("credential: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		switch {
		case name == current || name == DataLink:
		case isVersion(name) && e.IsDir():
			if err := os.RemoveAll(filepath.Join(d.Path, name)); err != nil {
				return fmt.Errorf("credential: removing the old version %s: %w", name, err)
			}
			step("remove " + name)
		case atomicfile.IsTemp(name):
			os.Remove(filepath.Join(d.Path, name))
		}
	}
	return nil
}

func (d Dir) dataLink() string { return filepath.Join(d.Path, DataLink) }

func (d Dir) resolve(ver string) string {
	if filepath.IsAbs(ver) {
		return ver
	}
	return filepath.Join(d.Path, ver)
}

// plainFiles is where a directory of plain files keeps each file: in Path,
// or where Copies says (older agents wrote a moved file only there).
func (d Dir) plainFiles() Files {
	f := In(d.Path)
	for _, p := range []struct {
		dst  *string
		link string
	}{
		{&f.Key, d.Copies.Key}, {&f.Cert, d.Copies.Cert}, {&f.Chain, d.Copies.Chain},
		{&f.Fullchain, d.Copies.Fullchain}, {&f.Bundle, d.Copies.Bundle},
	} {
		if p.link != "" {
			*p.dst = p.link
		}
	}
	return f
}

// afterStep, when set, is called after each durable step of a write, with
// its name. Tests set it to kill the process there (see crashpoint.go).
var afterStep func(step string)

func step(name string) {
	if afterStep != nil {
		afterStep(name)
	}
}
