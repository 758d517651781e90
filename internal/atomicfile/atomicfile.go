// Package atomicfile is the one owner of durable writes: every file mica
// writes goes through it, so that a reader sees either the old content or
// the new, never a torn mix, and a crash (or SIGKILL, or power loss) leaves
// one of the two. A file is written to a temporary name in the same
// directory, fsynced, renamed (or, for Create, hard-linked) over the target,
// and the directory is fsynced. Symlink points a name at a new target the
// same way, which is what makes a directory of several files switch at once
// (package credential).
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ErrExists is returned by Create when the target already exists.
var ErrExists = errors.New("atomicfile: file exists")

// Write atomically replaces (or creates) path with data and mode perm.
func Write(path string, data []byte, perm fs.FileMode) error {
	return writeFile(path, data, perm, true, -1, -1)
}

// WriteOwned is Write that also gives the file to uid and gid (-1 leaves
// either unchanged) before it is installed, so the owner is right from the
// first moment the file exists under its name. Changing the owner needs
// privileges (CAP_CHOWN) unless the ids are the caller's own.
func WriteOwned(path string, data []byte, perm fs.FileMode, uid, gid int) error {
	return writeFile(path, data, perm, true, uid, gid)
}

// Create is Write that refuses to replace an existing file: the error wraps
// ErrExists. Two writers racing for one name cannot clobber each other.
func Create(path string, data []byte, perm fs.FileMode) error {
	return writeFile(path, data, perm, false, -1, -1)
}

func writeFile(path string, data []byte, perm fs.FileMode, overwrite bool, uid, gid int) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("atomicfile: cannot write in %s: %w", dir, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// Set the mode before any byte is written, so a key is never readable
	// by others even for a moment.
	if err = tmp.Chmod(perm); err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	if uid != -1 || gid != -1 {
		if err = tmp.Chown(uid, gid); err != nil {
			return fmt.Errorf("atomicfile: giving %s to %d:%d: %w (run as root or drop the owner setting)", path, uid, gid, err)
		}
	}
	if _, err = tmp.Write(data); err != nil {
		return fmt.Errorf("atomicfile: writing %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("atomicfile: syncing %s: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	if overwrite {
		err = os.Rename(tmp.Name(), path)
	} else {
		// link fails if the target exists, which rename would not.
		if err = os.Link(tmp.Name(), path); err == nil {
			os.Remove(tmp.Name())
		} else if errors.Is(err, fs.ErrExist) {
			err = fmt.Errorf("%w: %s (remove it first, or choose another path)", ErrExists, path)
			return err
		}
	}
	if err != nil {
		return fmt.Errorf("atomicfile: installing %s: %w", path, err)
	}
	return SyncDir(dir)
}

// Symlink atomically makes path a symbolic link to target, replacing
// whatever file or link was there: a reader that opens path finds the old
// target or the new one, never nothing. The link is made under a temporary
// name, renamed over path, and the directory is fsynced.
func Symlink(target, path string) error {
	dir := filepath.Dir(path)
	tmp, err := tempName(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("atomicfile: linking %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("atomicfile: installing the link %s: %w", path, err)
	}
	return SyncDir(dir)
}

// tempName picks an unused name in dir; os.CreateTemp cannot make links.
func tempName(dir, prefix string) (string, error) {
	f, err := os.CreateTemp(dir, prefix+"*")
	if err != nil {
		return "", fmt.Errorf("atomicfile: cannot write in %s: %w", dir, err)
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return "", fmt.Errorf("atomicfile: %w", err)
	}
	return name, nil
}

// IsTemp reports whether name (a base name) is one of the temporary names
// this package writes under, so a writer may remove what a crash left.
func IsTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-")
}

// SyncDir fsyncs a directory, so that the names created, renamed or
// removed in it survive a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("atomicfile: syncing directory %s: %w", dir, err)
	}
	return nil
}
