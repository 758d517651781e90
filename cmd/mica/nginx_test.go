package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mica-pki/mica/credential"
	"github.com/mica-pki/mica/internal/crl"
	"github.com/mica-pki/mica/internal/testaddr"
	"github.com/mica-pki/mica/internal/testlayer"
)

// toolPath finds a program the interop tests drive (testlayer.Tool):
// -short skips the test; missing, the program fails it.
func toolPath(t *testing.T, name string) string {
	t.Helper()
	return testlayer.Tool(t, name)
}

// unprivileged is how to run a server that refuses root (or should not be
// root): as nobody when the test runs as root, else as ourselves.
type unprivileged struct {
	cred     *syscall.Credential
	uid, gid int
}

func newUnprivileged(t *testing.T) unprivileged {
	t.Helper()
	if os.Geteuid() != 0 {
		return unprivileged{uid: -1, gid: -1}
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("running as root and no 'nobody' user to run nginx as: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return unprivileged{cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, uid: uid, gid: gid}
}

// command makes a command that runs as the unprivileged account.
func (u unprivileged) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	if u.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: u.cred}
	}
	return cmd
}

// dir makes a temporary directory the account owns; t.TempDir's parents
// are closed to other users.
func (u unprivileged) dir(t *testing.T, pattern string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	u.chown(t, dir)
	return dir
}

// write writes a file the account owns, readable by it only.
func (u unprivileged) write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	u.chown(t, path)
}

func (u unprivileged) chown(t *testing.T, path string) {
	t.Helper()
	if u.cred != nil {
		if err := os.Chown(path, u.uid, u.gid); err != nil {
			t.Fatal(err)
		}
	}
}

// copyTo copies files from one credential directory into dir under new names.
func (u unprivileged) copyTo(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for dst, src := range files {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		u.write(t, filepath.Join(dir, dst), data)
	}
}

// freeLoopbackPort is a port on 127.0.0.1 for a program that cannot be
// told to pick its own and report it, or that must keep its address
// across reloads: one below the ephemeral range (testaddr.Localhost), so
// the kernel gives it to no other socket before the program binds it.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	return int(testaddr.Localhost(t).Port())
}

// nginxConf verifies client certificates against the mica bundle and the
// CRLs, and answers with what it verified.
const nginxConf = `pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
worker_processes 1;
events { worker_connections 64; }
http {
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s/tmp/body;
    proxy_temp_path %[1]s/tmp/proxy;
    fastcgi_temp_path %[1]s/tmp/fastcgi;
    uwsgi_temp_path %[1]s/tmp/uwsgi;
    scgi_temp_path %[1]s/tmp/scgi;
    default_type text/plain;
    server {
        listen 127.0.0.1:%[2]d ssl;
        server_name nginx.svc.example.org;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate %[1]s/server-fullchain.pem;
        ssl_certificate_key %[1]s/server-key.pem;
        ssl_verify_client on;
        ssl_client_certificate %[1]s/bundle.pem;
        ssl_verify_depth 2;
        ssl_crl %[1]s/crl.pem;
        location / {
            return 200 "verify=$ssl_client_verify serial=$ssl_client_serial\n";
        }
    }
}
`

// nginxProc is a running nginx in its own prefix directory.
type nginxProc struct {
	bin, dir, conf string
	port           int
	as             unprivileged
	cmd            *exec.Cmd
	done           chan struct{}
}

func (n *nginxProc) args(extra ...string) []string {
	return append([]string{"-p", n.dir, "-c", n.conf, "-e", filepath.Join(n.dir, "error.log")}, extra...)
}

func (n *nginxProc) errorLog() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "error.log"))
	return string(b)
}

// startNginx runs nginx in the foreground on a free loopback port,
// retrying when another process takes the port first.
func startNginx(t *testing.T, bin, dir string, as unprivileged) *nginxProc {
	t.Helper()
	return startNginxWith(t, bin, dir, as, nginxConf)
}

// startNginxWith is startNginx with another config, written with the same
// placeholders: %[1]s the prefix directory, %[2]d the port.
func startNginxWith(t *testing.T, bin, dir string, as unprivileged, conf string) *nginxProc {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		t.Fatal(err)
	}
	as.chown(t, filepath.Join(dir, "tmp"))
	n := &nginxProc{bin: bin, dir: dir, conf: filepath.Join(dir, "nginx.conf"), as: as}
	for range 3 {
		n.port = freeLoopbackPort(t)
		as.write(t, n.conf, fmt.Appendf(nil, conf, dir, n.port))
		n.cmd = as.command(bin, n.args("-g", "daemon off;")...)
		n.done = make(chan struct{})
		if err := n.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(n.cmd, n.done)
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case <-n.done:
				deadline = time.Time{} // exited: try another port
				continue
			default:
			}
			if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", n.port)); err == nil {
				c.Close()
				t.Cleanup(func() {
					n.cmd.Process.Signal(syscall.SIGQUIT)
					select {
					case <-n.done:
					case <-time.After(10 * time.Second):
						n.cmd.Process.Kill()
					}
				})
				return n
			}
			time.Sleep(50 * time.Millisecond) // nginx says nothing once it listens: its port is polled, within the deadline
		}
		n.cmd.Process.Kill()
		<-n.done
	}
	t.Fatalf("nginx did not start:\n%s", n.errorLog())
	return nil
}

// reload is `nginx -s reload`: the master rereads its config, CRL included.
func (n *nginxProc) reload(t *testing.T) {
	t.Helper()
	if out, err := n.as.command(n.bin, n.args("-s", "reload")...).CombinedOutput(); err != nil {
		t.Fatalf("nginx -s reload: %v\n%s\n%s", err, out, n.errorLog())
	}
}

// curlResult is one curl request: the status (0 when there was no HTTP
// answer), the body, and curl's own error text.
type curlResult struct {
	code   int
	body   string
	stderr string
}

// curl requests url with a client credential directory (empty: none),
// resolving the name in url to 127.0.0.1 and trusting only the mica root.
func curl(t *testing.T, bin, rootPEM, resolve, url, credDir string, extra ...string) curlResult {
	t.Helper()
	args := []string{"-sS", "--max-time", "20", "--cacert", rootPEM, "-o", "-", "-w", "\n%{http_code}"}
	if resolve != "" {
		args = append(args, "--resolve", resolve)
	}
	if credDir != "" {
		args = append(args, "--cert", filepath.Join(credDir, fullchainFile), "--key", filepath.Join(credDir, keyFile))
	}
	cmd := exec.Command(bin, append(append(args, extra...), url)...)
	var errb strings.Builder
	cmd.Stderr = &errb
	out, _ := cmd.Output()
	// -w writes the status after the body, on a line of its own.
	i := strings.LastIndexByte(string(out), '\n')
	if i < 0 {
		return curlResult{stderr: errb.String()}
	}
	status, _ := strconv.Atoi(string(out[i+1:]))
	return curlResult{code: status, body: string(out[:i]), stderr: errb.String()}
}

// rootCRL is the root's CRL, listing no intermediate. nginx's ssl_crl
// checks every level of the chain (OpenSSL's CRL_CHECK_ALL), so the relying
// party needs the root's CRL next to the intermediate's: with the root key
// in the data directory the server signs it itself; one signed with `mica
// ca root-crl` (the root ceremony, listing withdrawn intermediates) takes
// its place. It is fetched from where the server publishes it, as a
// relying party would.
func (e *testEnv) rootCRL(t *testing.T) []byte {
	t.Helper()
	root := readCertFile(t, filepath.Join(e.dataDir, "ca", "root.pem"))
	path := e.server.httpURL + crl.Path(root)
	get := func() *x509.RevocationList {
		t.Helper()
		resp, err := http.Get(path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		der, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", path, resp.Status)
		}
		rl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		if err := rl.CheckSignatureFrom(root); err != nil || len(rl.RevokedCertificateEntries) != 0 {
			t.Fatalf("root CRL: signature %v, %d entries", err, len(rl.RevokedCertificateEntries))
		}
		return rl
	}
	if rl := get(); rl.NextUpdate.Sub(rl.ThisUpdate) > 25*time.Hour {
		t.Fatalf("before the ceremony the server's own root CRL is served, valid a day; got %s", rl.NextUpdate.Sub(rl.ThisUpdate))
	}
	if r := e.mica("ca", "root-crl", "--revoke", "not-a-serial"); r.code != 2 || !strings.Contains(r.stderr, "not a certificate serial number") {
		t.Fatalf("root-crl with a bad serial: exit %d, %q; want a usage error", r.code, r.stderr)
	}
	if rl := get(); rl.NextUpdate.Sub(rl.ThisUpdate) > 25*time.Hour {
		t.Fatal("a refused root-crl published something")
	}
	e.micaOK("ca", "root-crl", "--validity", "720h")
	rl := get()
	if rl.NextUpdate.Sub(rl.ThisUpdate) != 720*time.Hour {
		t.Fatalf("after root-crl: a CRL valid %s, want the ceremony's 720h", rl.NextUpdate.Sub(rl.ThisUpdate))
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: rl.Raw})
}

func readCertFile(t *testing.T, path string) *x509.Certificate {
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

// TestNginxInterop: Debian's nginx with ssl_verify_client and ssl_crl
// accepts a mica client certificate sent with curl, and refuses it once it
// is revoked and nginx has reloaded the refreshed CRL, while another live
// certificate still gets in.
func TestNginxInterop(t *testing.T) {
	nginxBin, curlBin := toolPath(t, "nginx"), toolPath(t, "curl")
	e := newTestEnv(t, "sqlite")
	serverDir := e.issue("nginx.svc.example.org", "web")
	good := e.issue("spiffe://example.org/billing/nginx-client", "service")
	revoked := e.issue("spiffe://example.org/billing/nginx-revoked", "service")

	as := newUnprivileged(t)
	dir := as.dir(t, "mica-nginx-")
	as.copyTo(t, dir, map[string]string{
		"server-fullchain.pem": filepath.Join(serverDir, fullchainFile),
		"server-key.pem":       filepath.Join(serverDir, keyFile),
		"bundle.pem":           filepath.Join(serverDir, bundleFile),
	})
	rootCRL := e.rootCRL(t)
	writeCRL := func() {
		der := e.fetchCRL(t, good)
		as.write(t, filepath.Join(dir, "crl.pem"), append(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), rootCRL...))
	}
	writeCRL()
	n := startNginx(t, nginxBin, dir, as)

	rootPEM := filepath.Join(e.dataDir, "ca", "root.pem")
	url := fmt.Sprintf("https://nginx.svc.example.org:%d/", n.port)
	resolve := fmt.Sprintf("nginx.svc.example.org:%d:127.0.0.1", n.port)
	get := func(cred string) curlResult { return curl(t, curlBin, rootPEM, resolve, url, cred) }
	wantServed := func(cred string) {
		t.Helper()
		r := get(cred)
		serial := strings.TrimLeft(readLeaf(t, cred).SerialNumber.Text(16), "0")
		got := strings.TrimLeft(strings.ToLower(strings.TrimPrefix(strings.TrimSpace(r.body), "verify=SUCCESS serial=")), "0")
		if r.code != 200 || got != serial {
			t.Fatalf("curl with %s: status %d body %q (%s), want 200 and serial %s\nnginx error log:\n%s",
				filepath.Base(filepath.Dir(cred)), r.code, r.body, r.stderr, serial, n.errorLog())
		}
	}
	wantServed(good)
	wantServed(revoked)
	if r := get(""); r.code != 400 || !strings.Contains(r.body, "No required SSL certificate") {
		t.Errorf("curl without a client certificate: status %d %q, want nginx's 400", r.code, r.body)
	}

	e.micaOK("cert", "revoke", readLeaf(t, revoked).SerialNumber.Text(16), "--reason", "keyCompromise")
	eventually(t, "nginx refuses the revoked certificate after the CRL refresh and reload", func() error {
		writeCRL()
		n.reload(t)
		if r := get(revoked); r.code != 400 || !strings.Contains(r.body, "SSL certificate error") {
			return fmt.Errorf("revoked certificate: status %d %q", r.code, r.body)
		}
		return nil
	})
	if !strings.Contains(n.errorLog(), "certificate revoked") {
		t.Errorf("nginx's error log does not name the revocation:\n%s", n.errorLog())
	}
	wantServed(good)
}
