// Package atomicfile writes files so that a reader sees either the old
// content or the new, never a torn mix, and a crash leaves one of the two:
// write a temporary file in the same directory, fsync it, rename it over the
// target, fsync the directory.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ErrExists is returned by Create when the target already exists.
var ErrExists = errors.New("atomicfile: file exists")

// Write atomically replaces (or creates) path with data and mode perm.
func Write(path string, data []byte, perm fs.FileMode) error {
	return write(path, data, perm, true)
}

// WriteOwned is Write that also gives the file to uid and gid (-1 leaves
// either unchanged) before it is installed, so the owner is right from the
// first moment the file exists under its name. Changing the owner needs
// privileges (CAP_CHOWN) unless the ids are the caller's own.
func WriteOwned(path string, data []byte, perm fs.FileMode, uid, gid int) error {
	return writeFile(path, data, perm, true, uid, gid)
}

// Create is Write that refuses to replace an existing file.
func Create(path string, data []byte, perm fs.FileMode) error {
	return write(path, data, perm, false)
}

func write(path string, data []byte, perm fs.FileMode, overwrite bool) error {
	return writeFile(path, data, perm, overwrite, -1, -1)
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
	return syncDir(dir)
}

func syncDir(dir string) error {
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
