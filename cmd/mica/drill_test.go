package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/credential"
	"github.com/mica-pki/mica/internal/crl"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/sqlite"
	"github.com/mica-pki/mica/mtls"
)

// drillConfig rotates in minutes what production rotates in months: leaves
// of 12 s, intermediates of 60 s (the next prepared at half, active 12 s
// later), the root of 240 s rolling over on its own.
const drillConfig = `trust_domain: example.org
database: ""
admins:
  spiffe://example.org/mica/admin/admin: admin
profiles:
  workload:
    spiffe: ["/drill/*"]
    default_ttl: 12s
    max_ttl: 12s
    ext_key_usage: [clientAuth, serverAuth]
limits:
  per_identity: {rate: off}
ca:
  intermediate_lifetime: 60s
  root_lifetime: 240s
  prepare_at: 0.5
  propagation: 12s
  root_rollover: auto
  poll: 250ms
`

// drillNginxConf verifies clients against the roots of the trust bundle and
// the CRLs of every CA in it, as a verifier that is not mica's is set up:
// the drill rewrites both files from /v1/bundle and reloads nginx.
const drillNginxConf = `pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
worker_processes 1;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %[1]s/tmp/body;
    proxy_temp_path %[1]s/tmp/proxy;
    fastcgi_temp_path %[1]s/tmp/fastcgi;
    uwsgi_temp_path %[1]s/tmp/uwsgi;
    scgi_temp_path %[1]s/tmp/scgi;
    default_type text/plain;
    server {
        listen 127.0.0.1:%[2]d ssl;
        ssl_protocols TLSv1.3;
        ssl_certificate %[1]s/cred/fullchain.pem;
        ssl_certificate_key %[1]s/cred/key.pem;
        ssl_verify_client on;
        ssl_client_certificate %[1]s/ca.pem;
        ssl_verify_depth 3;
        ssl_crl %[1]s/crl.pem;
        location / {
            return 200 "verify=$ssl_client_verify\n";
        }
    }
}
`

// bundleSnap is the trust bundle as a verifier fetched it at one moment.
type bundleSnap struct {
	at            time.Time
	roots, inters []*x509.Certificate
	rootsFile     string // PEM files, for openssl
	intersFile    string
}

// drillLog collects the drill's outcomes from its goroutines.
type drillLog struct {
	mu         sync.Mutex
	handshakes map[string]int
	failures   []string
	issued     []issuedCert
	snaps      []*bundleSnap
	reloads    int
}

type issuedCert struct {
	cert  *x509.Certificate
	chain []*x509.Certificate
	at    time.Time
}

func (l *drillLog) fail(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failures = append(l.failures, time.Now().Format("15:04:05.000 ")+fmt.Sprintf(format, args...))
}

// snapAt is the latest bundle fetched at or before t (the first one before
// any was fetched).
func (l *drillLog) snapAt(t time.Time) *bundleSnap {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := sort.Search(len(l.snaps), func(i int) bool { return l.snaps[i].at.After(t) })
	if i == 0 {
		return l.snaps[0]
	}
	return l.snaps[i-1]
}

func pemOf(certs []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// bundleFollower fetches /v1/bundle and every CA's CRL, as an operator's
// script for a verifier that is not mica's would: it writes nginx's CA and
// CRL files when they change and reloads nginx, and keeps what it fetched
// as the bundle of each moment.
type bundleFollower struct {
	e           *testEnv
	log         *drillLog
	as          unprivileged
	dir         string // nginx's prefix
	snapDir     string
	roots       atomic.Pointer[x509.CertPool]
	lastCA      []byte
	lastCRL     []byte
	reloadNginx func() error
}

func (f *bundleFollower) once(ctx context.Context) error {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion: tls.VersionTLS13, RootCAs: f.roots.Load()}}}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, "GET", f.e.server.url+"/v1/bundle", nil)
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("GET /v1/bundle: %w", err)
	}
	var b client.Bundle
	err = json.NewDecoder(resp.Body).Decode(&b)
	resp.Body.Close()
	if err != nil {
		return err
	}
	snap := &bundleSnap{at: time.Now()}
	for _, p := range b.Roots {
		certs, err := credential.ParseCertificates([]byte(p))
		if err != nil {
			return err
		}
		snap.roots = append(snap.roots, certs...)
	}
	for _, p := range b.Intermediates {
		certs, err := credential.ParseCertificates([]byte(p))
		if err != nil {
			return err
		}
		snap.inters = append(snap.inters, certs...)
	}
	pool := x509.NewCertPool()
	for _, r := range snap.roots {
		pool.AddCert(r)
	}
	f.roots.Store(pool)
	// One CRL per CA: every root and intermediate of the bundle (a
	// cross-certificate shares its root's key, and so its CRL).
	var crls bytes.Buffer
	seen := map[string]bool{}
	for _, c := range append(slices.Clone(snap.roots), snap.inters...) {
		p := crl.Path(c)
		if seen[p] {
			continue
		}
		seen[p] = true
		resp, err := http.Get(f.e.server.httpURL + p)
		if err != nil {
			return err
		}
		der, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("GET %s (%s): %s", p, c.Subject.CommonName, resp.Status)
		}
		pem.Encode(&crls, &pem.Block{Type: "X509 CRL", Bytes: der})
	}
	caPEM := pemOf(snap.roots)
	n := len(f.log.snaps)
	snap.rootsFile = filepath.Join(f.snapDir, fmt.Sprintf("roots-%d.pem", n))
	snap.intersFile = filepath.Join(f.snapDir, fmt.Sprintf("inters-%d.pem", n))
	os.WriteFile(snap.rootsFile, caPEM, 0o644)
	os.WriteFile(snap.intersFile, pemOf(snap.inters), 0o644)
	f.log.mu.Lock()
	f.log.snaps = append(f.log.snaps, snap)
	f.log.mu.Unlock()
	if bytes.Equal(caPEM, f.lastCA) && bytes.Equal(crls.Bytes(), f.lastCRL) {
		return nil
	}
	for name, data := range map[string][]byte{"ca.pem": caPEM, "crl.pem": crls.Bytes()} {
		if err := f.write(filepath.Join(f.dir, name), data); err != nil {
			return err
		}
	}
	f.lastCA, f.lastCRL = caPEM, slices.Clone(crls.Bytes())
	if f.reloadNginx != nil {
		if err := f.reloadNginx(); err != nil {
			return err
		}
		f.log.mu.Lock()
		f.log.reloads++
		f.log.mu.Unlock()
	}
	return nil
}

// write replaces a file nginx reads, atomically, owned by nginx's account.
func (f *bundleFollower) write(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	if f.as.cred != nil {
		if err := os.Chown(tmp, f.as.uid, f.as.gid); err != nil {
			return err
		}
	}
	return os.Rename(tmp, path)
}

// caStatus reads `mica ca status --output json`.
func (e *testEnv) caStatus(t *testing.T) caStatus {
	t.Helper()
	var st caStatus
	if err := json.Unmarshal([]byte(e.micaOK("ca", "status", "--output", "json")), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// echoServer accepts mTLS connections with cfg and answers "ok" to each
// verified peer; it stops when ctx ends.
func echoServer(ctx context.Context, t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	go func() { <-ctx.Done(); ln.Close() }()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if err := c.(*tls.Conn).Handshake(); err != nil {
					return
				}
				io.WriteString(c, "ok\n")
			}()
		}
	}()
	return ln.Addr().String()
}

// handshake dials addr with cfg and reads the peer's answer: for an echo
// server "ok", for nginx an HTTP 200. In TLS 1.3 the client finishes its
// side before the server has judged the client's certificate, so only an
// answer proves both sides accepted.
func handshake(cfg *tls.Config, addr string, http bool) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if http {
		io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("no answer after the handshake: %w", err)
	}
	if want := "ok\n"; http && !strings.HasPrefix(line, "HTTP/1.1 200") || !http && line != want {
		return nil, fmt.Errorf("answer %q", line)
	}
	return c.ConnectionState().PeerCertificates[0], nil
}

// TestRotationDrill rotates the CA under load: two agents' workloads (one
// on go-spiffe and the Workload API, one on package mtls and the agent's
// files) handshake with each other and with an nginx that verifies against
// the bundle and CRLs every 100 ms, while an issuance load renews as fast
// as it can; the intermediate rotates (at least twice) and the root rolls
// over on their thresholds. Not one handshake or issuance may fail, and
// every certificate issued verifies with openssl against the bundle of its
// time.
func TestRotationDrill(t *testing.T) {
	nginxBin := toolPath(t, "nginx")
	toolPath(t, "openssl")
	drillStart := time.Now()
	e := &testEnv{t: t, root: t, dataDir: filepath.Join(t.TempDir(), "data"), engine: "sqlite"}
	e.env = []string{"MICA_PASSPHRASE=" + testPassphrase, "MICA_DATA_DIR=" + e.dataDir}
	if err := os.MkdirAll(e.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.dataDir, configFileName), []byte(drillConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	e.micaOK("init", "--trust-domain", "example.org", "--root-validity", "240s", "--intermediate-validity", "60s")
	e.start()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	token := func(id string) string {
		return strings.TrimSpace(e.micaOK("token", "create", "--identity", id, "--profile", "workload"))
	}
	// Tokens first: the first admin credential lives only as long as the
	// first intermediate.
	tokA, tokB, tokN, tokL := token("spiffe://example.org/drill/a"), token("spiffe://example.org/drill/b"),
		token("spiffe://example.org/drill/nginx"), token("spiffe://example.org/drill/load")

	log := &drillLog{handshakes: map[string]int{}}
	as := newUnprivileged(t)
	ngDir := as.dir(t, "mica-drill-nginx-")
	credDir := filepath.Join(ngDir, "cred")
	if err := os.Mkdir(credDir, 0o700); err != nil {
		t.Fatal(err)
	}
	as.chown(t, credDir)
	follower := &bundleFollower{e: e, log: log, as: as, dir: ngDir, snapDir: t.TempDir()}
	follower.roots.Store(e.roots)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	if err := follower.once(ctx); err != nil {
		t.Fatal(err)
	}

	agentA := e.startAgentWith(tokA, "--bundle-interval", "1s")
	agentB := e.startAgentWith(tokB, "--bundle-interval", "1s")
	ownerArgs := []string{}
	if as.cred != nil {
		ownerArgs = []string{"--owner", fmt.Sprintf("%d:%d", as.uid, as.gid)}
	}
	e.startAgentWith(tokN, append([]string{"--bundle-interval", "1s", "--out", credDir,
		"--reload-pid-file", filepath.Join(ngDir, "nginx.pid"), "--reload-signal", "HUP"}, ownerArgs...)...)
	ng := startNginxWith(t, nginxBin, ngDir, as, drillNginxConf)
	follower.reloadNginx = func() error {
		if out, err := as.command(nginxBin, ng.args("-s", "reload")...).CombinedOutput(); err != nil {
			return fmt.Errorf("nginx -s reload: %v: %s", err, out)
		}
		return nil
	}
	nginxAddr := fmt.Sprintf("127.0.0.1:%d", ng.port)

	// Workload A: go-spiffe on agent A's Workload API.
	srcA, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(agentA.addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer srcA.Close()
	serverA := tlsconfig.MTLSServerConfig(srcA, srcA, tlsconfig.AuthorizeMemberOf(td))
	serverA.SessionTicketsDisabled = true
	clientA := tlsconfig.MTLSClientConfig(srcA, srcA, tlsconfig.AuthorizeMemberOf(td))
	// Workload B: package mtls on agent B's files.
	srcB, err := mtls.NewFileSource(agentB.out, mtls.WithPollInterval(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer srcB.Close()
	serverB, err := mtls.ServerConfig(mtls.Options{Source: srcB, Authorize: mtls.AuthorizeTrustDomains("example.org")})
	if err != nil {
		t.Fatal(err)
	}
	serverB.SessionTicketsDisabled = true
	clientB, err := mtls.ClientConfig(mtls.Options{Source: srcB, Authorize: mtls.AuthorizeTrustDomains("example.org")})
	if err != nil {
		t.Fatal(err)
	}
	addrA, addrB := echoServer(ctx, t, serverA), echoServer(ctx, t, serverB)

	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	// The bundle follower: every second, like a cron job.
	wg.Go(func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if err := follower.once(ctx); err != nil && ctx.Err() == nil {
				log.fail("bundle follower: %v", err)
			}
		}
	})
	// The handshakes: every 100 ms, each workload with the other and with
	// nginx.
	issuersSeen := map[string]map[string]bool{}
	wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		pairs := []struct {
			name string
			cfg  *tls.Config
			addr string
			http bool
		}{
			{"mtls→go-spiffe", clientB, addrA, false},
			{"go-spiffe→mtls", clientA, addrB, false},
			{"go-spiffe→nginx", clientA, nginxAddr, true},
			{"mtls→nginx", clientB, nginxAddr, true},
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for _, p := range pairs {
				peer, err := handshake(p.cfg, p.addr, p.http)
				if ctx.Err() != nil {
					return
				}
				log.mu.Lock()
				log.handshakes[p.name]++
				if err == nil {
					if issuersSeen[p.name] == nil {
						issuersSeen[p.name] = map[string]bool{}
					}
					issuersSeen[p.name][peer.Issuer.CommonName] = true
				}
				log.mu.Unlock()
				if err != nil {
					log.fail("handshake %s: %v", p.name, err)
				}
			}
		}
	})
	// The issuance load: one enrollment, then renewals back to back (with a
	// new key each), bounded by the drill.
	wg.Go(func() { issuanceLoad(ctx, e, follower, log, tokL) })

	// Wait until the root has rolled over and an intermediate signed by the
	// new root has been active for a whole leaf lifetime, so that every
	// workload has renewed under it. The deadline bounds a broken drill.
	deadline := time.Now().Add(6 * time.Minute)
	var final caStatus
	tick := time.NewTicker(time.Second)
	for done := false; !done; {
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("the drill did not complete its rotations within 6 minutes: %+v", e.caStatus(t).Slots)
		}
		final = e.caStatus(t)
		for _, s := range final.Slots {
			if s.Kind == "intermediate" && s.State == "active" && s.ActivatedAt != nil && time.Since(*s.ActivatedAt) > 12*time.Second {
				for _, r := range final.Slots {
					if r.ID == s.Parent && r.ID != 1 && r.State == "active" {
						done = true
					}
				}
			}
		}
	}
	tick.Stop()
	stop()
	wg.Wait()
	elapsed := time.Since(drillStart)
	e.server.stop(t, syscall.SIGTERM) // the inventory is read from the database below

	// The goroutines have ended: the log is read without its lock.
	for _, f := range log.failures {
		t.Error(f)
	}
	total := 0
	for _, n := range log.handshakes {
		total += n
	}
	if total < 1000 {
		t.Errorf("only %d handshakes in the drill", total)
	}
	// Every pair saw peers of several intermediates, the new root's too.
	for name, seen := range issuersSeen {
		if len(seen) < 3 {
			t.Errorf("%s saw peers of only %v", name, seen)
		}
	}

	// The rotations, from the slots.
	var intermediates, roots int
	var perRotation []time.Duration
	for _, s := range final.Slots {
		if s.ActivatedAt == nil || s.ActivatedAt.Sub(s.PreparedAt) <= 0 {
			continue // the imported ones
		}
		perRotation = append(perRotation, s.ActivatedAt.Sub(s.PreparedAt))
		if s.Kind == "root" {
			roots++
		} else {
			intermediates++
		}
	}
	if intermediates < 2 || roots < 1 {
		t.Errorf("%d intermediate and %d root rotations, want at least 2 and 1", intermediates, roots)
	}

	verifyDrillCertificates(t, e, log)
	var load string
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	t.Logf("drill: %s, %d handshakes (%v), 0 failed; %d issuances by the load, 0 failed; %d intermediate and %d root rotations, "+
		"prepared → active %v each; %d nginx reloads for bundle or CRL changes; load average %s",
		elapsed.Round(time.Second), total, log.handshakes, len(log.issued), intermediates, roots, roundAll(perRotation), log.reloads, load)
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(100 * time.Millisecond)
	}
	return out
}

// startAgentWith starts an agent that enrolls with token.
func (e *testEnv) startAgentWith(token string, args ...string) *agentProc {
	e.t.Helper()
	out := filepath.Join(e.t.TempDir(), "cred")
	for i, a := range args {
		if a == "--out" && i+1 < len(args) {
			out = args[i+1]
		}
	}
	a := e.runAgent(append([]string{"--token", token, "--out", out}, args...)...)
	a.out = out
	return a
}

// issuanceLoad renews one identity back to back with a new key each time,
// trusting the server with the bundle the follower fetched last, and
// records every certificate with the bundle of its time.
func issuanceLoad(ctx context.Context, e *testEnv, f *bundleFollower, log *drillLog, token string) {
	key, _ := keys.Generate(keys.ECDSAP256, rand.Reader)
	csr := func(k any) string {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
		if err != nil {
			panic(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	}
	var current atomic.Pointer[tls.Certificate]
	newClient := func() (*client.Client, error) {
		return client.New(client.Config{Server: e.server.url, Roots: f.roots.Load(), Timeout: 10 * time.Second,
			GetCertificate: func() (*tls.Certificate, error) {
				if c := current.Load(); c != nil {
					return c, nil
				}
				return &tls.Certificate{}, nil // none yet: enrolling with the token
			}})
	}
	record := func(resp *client.CertificateResponse, k any) error {
		certs, err := credential.ParseCertificates([]byte(resp.Certificate))
		if err != nil {
			return err
		}
		chain, err := credential.ParseCertificates([]byte(resp.Chain))
		if err != nil {
			return err
		}
		tc := &tls.Certificate{PrivateKey: k, Leaf: certs[0], Certificate: [][]byte{certs[0].Raw}}
		for _, c := range chain {
			tc.Certificate = append(tc.Certificate, c.Raw)
		}
		current.Store(tc)
		now := time.Now()
		log.mu.Lock()
		log.issued = append(log.issued, issuedCert{cert: certs[0], chain: chain, at: now})
		log.mu.Unlock()
		return nil
	}
	c, err := newClient()
	if err != nil {
		log.fail("issuance load: %v", err)
		return
	}
	resp, err := c.Enroll(ctx, token, client.CertificateRequest{CSR: csr(key)})
	if err == nil {
		err = record(resp, key)
	}
	if err != nil {
		log.fail("issuance load: enrolling: %v", err)
		return
	}
	for ctx.Err() == nil {
		c.Close()
		if c, err = newClient(); err != nil {
			log.fail("issuance load: %v", err)
			return
		}
		k, _ := keys.Generate(keys.ECDSAP256, rand.Reader)
		resp, err := c.Renew(ctx, client.CertificateRequest{CSR: csr(k)})
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = record(resp, k)
		}
		if err != nil {
			log.fail("issuance load: renewal: %v", err)
		}
	}
}

// verifyDrillCertificates checks every certificate in the inventory (the
// agents', the load's, the server's own, the OCSP responders') with openssl
// against the bundle the follower had fetched when it was issued, at the
// time it was issued; and each of the load's, in Go, against every root of
// its bundle on its own: a verifier trusting either root accepts it.
func verifyDrillCertificates(t *testing.T, e *testEnv, log *drillLog) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(e.dataDir, "mica.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	issuedAt := map[string]time.Time{}
	for after := int64(0); ; {
		evs, err := st.Events(ctx, store.EventFilter{AfterSeq: after, Actions: []store.Action{store.ActionCertIssued, store.ActionCertRenewed}, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			break
		}
		for _, ev := range evs {
			issuedAt[ev.Serial] = ev.Time
			after = ev.Seq
		}
	}
	type group struct {
		snap *bundleSnap
		at   int64
	}
	groups := map[group][]string{}
	dir := t.TempDir()
	n := 0
	for off := 0; ; off += 1000 {
		certs, err := st.ListCertificates(ctx, store.Filter{Limit: 1000, Offset: off})
		if err != nil {
			t.Fatal(err)
		}
		if len(certs) == 0 {
			break
		}
		for _, c := range certs {
			at, ok := issuedAt[c.Serial]
			if !ok {
				t.Errorf("certificate %s has no issuance event", c.Serial)
				continue
			}
			path := filepath.Join(dir, c.Serial+".pem")
			os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.DER}), 0o644)
			g := group{log.snapAt(at), at.Unix()}
			groups[g] = append(groups[g], path)
			n++
		}
	}
	for g, paths := range groups {
		out, err := exec.Command("openssl", append([]string{"verify", "-x509_strict", "-attime", strconv.FormatInt(g.at, 10),
			"-CAfile", g.snap.rootsFile, "-untrusted", g.snap.intersFile}, paths...)...).CombinedOutput()
		if err != nil {
			t.Errorf("openssl verify against the bundle of %s: %v\n%s", g.snap.at.Format("15:04:05"), err, out)
		}
	}
	for _, ic := range log.issued {
		snap := log.snapAt(ic.at)
		inter := x509.NewCertPool()
		for _, c := range ic.chain {
			inter.AddCert(c)
		}
		for _, r := range snap.roots {
			roots := x509.NewCertPool()
			roots.AddCert(r)
			if _, err := ic.cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: ic.at,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("a certificate of %q issued at %s does not verify against root %q alone: %v",
					ic.cert.Issuer.CommonName, ic.at.Format("15:04:05.000"), r.Subject.CommonName, err)
			}
		}
	}
	if n < len(log.issued) {
		t.Errorf("the inventory holds %d certificates, fewer than the load's %d", n, len(log.issued))
	}
	t.Logf("openssl verify: %d certificates, each against the bundle of its time, in %d runs", n, len(groups))
}
