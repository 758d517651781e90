package tlsscan

import (
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"

	"github.com/mica-pki/mica/internal/discover/discovertest"
	"github.com/mica-pki/mica/internal/testaddr"
	"github.com/mica-pki/mica/internal/testlayer"
)

// startPostgres runs a real PostgreSQL with TLS on, presenting leaf and
// its chain, until the test ends. It needs initdb and pg_ctl (Debian's
// postgresql package, which scripts/test.sh installs); as root it runs
// them as nobody, since PostgreSQL refuses root.
func startPostgres(t *testing.T, leaf *discovertest.Cert, chain ...*discovertest.Cert) net.Addr {
	t.Helper()
	bin := postgresBin(t)
	dir, err := os.MkdirTemp("", "tlsscan-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var cred *syscall.Credential
	chown := func(string) {}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("nobody")
		if err != nil {
			t.Fatalf("running as root and no 'nobody' user to run PostgreSQL as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		chown = func(p string) {
			if err := os.Chown(p, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
	}
	chown(dir)
	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LANG=C", "LC_ALL=C"}
		if cred != nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			log, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
			t.Fatalf("%s %v: %v\n%s\n%s", name, args, err, out, log)
		}
	}
	data := filepath.Join(dir, "data")
	run("initdb", "-D", data, "-U", "scan", "--auth=trust", "--no-locale", "-E", "UTF8")
	var pemChain []byte
	pemChain = append(pemChain, discovertest.PEM(leaf.Cert)...)
	for _, c := range chain {
		pemChain = append(pemChain, discovertest.PEM(c.Cert)...)
	}
	certPath, keyPath := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	discovertest.WriteFile(t, certPath, pemChain, 0o644)
	discovertest.WriteFile(t, keyPath, discovertest.KeyPEM(t, leaf.Key), 0o600)
	chown(certPath)
	chown(keyPath)
	addr := testaddr.New(t)
	run("pg_ctl", "-D", data, "-l", filepath.Join(dir, "postgres.log"), "-w", "-t", "60", "-o",
		"-c listen_addresses="+addr.Addr().String()+" -p "+strconv.Itoa(int(addr.Port()))+" -k "+dir+" -c ssl=on -c ssl_cert_file="+certPath+" -c ssl_key_file="+keyPath, "start")
	t.Cleanup(func() { run("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop") })
	return net.TCPAddrFromAddrPort(addr)
}

func postgresBin(t *testing.T) string {
	t.Helper()
	testlayer.Integration(t, "runs PostgreSQL")
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p)
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.Sort(dirs)
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "pg_ctl")); err == nil {
			return dirs[i]
		}
	}
	t.Fatal("PostgreSQL's initdb and pg_ctl are not installed: run scripts/test.sh (it installs them) or apt-get install postgresql")
	return ""
}
