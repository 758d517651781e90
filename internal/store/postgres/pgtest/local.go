package pgtest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"

	"github.com/mica-pki/mica/internal/testaddr"
)

// local is a throwaway cluster in a temporary directory.
type local struct {
	dir, bin, url string
	cred          *syscall.Credential // set when running as root
}

// findBin locates initdb and pg_ctl: on PATH, else in the newest
// /usr/lib/postgresql/*/bin.
func findBin() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "pg_ctl")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return versionOf(b) - versionOf(a) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin: " +
		"install them (apt-get install postgresql) or set " + EnvURL + " to a server URL")
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func startLocal() (*local, error) {
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "mica-pg-")
	if err != nil {
		return nil, fmt.Errorf("create cluster directory: %w", err)
	}
	l := &local{dir: dir, bin: bin}
	if os.Geteuid() == 0 {
		// initdb and postgres refuse to run as root: hand the directory
		// to an unprivileged account and run them as it.
		u, err := user.Lookup("nobody")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("running as root and no 'nobody' user to run PostgreSQL as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		l.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("hand %s to nobody: %w", dir, err)
		}
	}
	data := filepath.Join(dir, "data")
	if err := l.run("initdb", "-D", data, "-U", "mica", "--auth=trust", "-E", "UTF8", "--no-locale"); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// The address is one no other socket is given meanwhile (see
	// testaddr); a program told the same address could still hold it, so
	// try a few.
	for range 3 {
		addr, perr := testaddr.Pick()
		if perr != nil {
			err = perr
			break
		}
		opts := fmt.Sprintf("-c listen_addresses=%s -p %d -k %s -c fsync=on -c max_connections=300", addr.Addr(), addr.Port(), dir)
		err = l.run("pg_ctl", "-D", data, "-l", filepath.Join(dir, "postgres.log"), "-w", "-t", "60", "-o", opts, "start")
		if err == nil {
			l.url = fmt.Sprintf("postgres://mica@%s/postgres?sslmode=disable", addr)
			return l, nil
		}
	}
	log, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
	os.RemoveAll(dir)
	return nil, fmt.Errorf("%w\npostgres.log:\n%s", err, log)
}

func (l *local) run(name string, args ...string) error {
	cmd := exec.Command(filepath.Join(l.bin, name), args...)
	cmd.Dir = l.dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LANG=C", "LC_ALL=C"}
	if l.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: l.cred}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %v: %w\n%s", name, args, err, out.Bytes())
	}
	return nil
}

func (l *local) stop() error {
	err := l.run("pg_ctl", "-D", filepath.Join(l.dir, "data"), "-m", "fast", "-w", "stop")
	return errors.Join(err, os.RemoveAll(l.dir))
}
