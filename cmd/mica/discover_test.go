package main

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/discover/discovertest"
	"github.com/mica-pki/mica/internal/testaddr"
)

// nginxDiscoveryConf serves two certificates on one port, chosen by SNI:
// mica's with its chain (the default server), and another CA's leaf
// without the intermediate that issued it.
const nginxDiscoveryConf = `pid %[1]s/nginx.pid;
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
    server {
        listen 127.0.0.1:%[2]d ssl default_server;
        server_name nginx.svc.example.org;
        ssl_certificate %[1]s/mica-fullchain.pem;
        ssl_certificate_key %[1]s/mica-key.pem;
        return 200 "mica\n";
    }
    server {
        listen 127.0.0.1:%[2]d ssl;
        server_name legacy.other.test;
        ssl_certificate %[1]s/legacy.pem;
        ssl_certificate_key %[1]s/legacy-key.pem;
        return 200 "legacy\n";
    }
}
`

// discovered lists the inventory's discovered certificates through the CLI.
func (e *testEnv) discovered(t *testing.T, extra ...string) map[string]client.DiscoveredCertificate {
	t.Helper()
	var list []client.DiscoveredCertificate
	out := e.micaOK(append([]string{"cert", "list", "--source", "discovered", "--sightings", "--include-gone", "--output", "json"}, extra...)...)
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("cert list --source discovered: %v\n%s", err, out)
	}
	byID := map[string]client.DiscoveredCertificate{}
	for _, c := range list {
		byID[c.Identity] = c
	}
	return byID
}

// TestDiscover stands up real TLS servers (Go's and Debian's nginx) with
// certificates from mica, from another CA, self-signed, expired and with a
// missing intermediate, and a directory of PEM, DER and PKCS#12 files;
// `mica discover` finds them, the inventory lists them with their
// findings, the expiry report and the metrics count them, and a rescan
// records what disappeared.
func TestDiscover(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) { testDiscover(t, engine) })
	}
}

func testDiscover(t *testing.T, engine string) {
	nginxBin, opensslBin := toolPath(t, "nginx"), toolPath(t, "openssl")
	work := t.TempDir()
	otherRoot := discovertest.Issue(t, nil, discovertest.Spec{CN: "Other Test Root", IsCA: true})
	otherInter := discovertest.Issue(t, otherRoot, discovertest.Spec{CN: "Other Test Intermediate", IsCA: true})
	rootsFile := filepath.Join(work, "other-root.pem")
	discovertest.WriteFile(t, rootsFile, discovertest.PEM(otherRoot.Cert), 0o644)
	e := newTestEnvWith(t, engine, fmt.Sprintf(`discovery:
  roots_file: %s
  owners:
    - owner: team-other
      names: ["*.other.test"]
    - owner: team-files
      paths: ["%s"]
`, rootsFile, filepath.Join(work, "tree")))

	// Go TLS servers, each presenting one certificate.
	now := time.Now()
	app := discovertest.Issue(t, otherInter, discovertest.Spec{CN: "app.other.test", DNS: []string{"app.other.test"},
		IPs: []string{"127.0.0.1"}, NotBefore: now.Add(-80 * 24 * time.Hour), NotAfter: now.Add(10 * 24 * time.Hour)})
	old := discovertest.Issue(t, otherInter, discovertest.Spec{CN: "old.other.test", DNS: []string{"old.other.test"}, IPs: []string{"127.0.0.1"},
		NotBefore: now.Add(-90 * 24 * time.Hour), NotAfter: now.Add(-24 * time.Hour)})
	later := now.Add(200 * 24 * time.Hour)
	self := discovertest.Issue(t, nil, discovertest.Spec{CN: "forgotten.test", DNS: []string{"forgotten.test"}, IPs: []string{"127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: later})
	micaDir := e.issue("tls.svc.example.org", "web")
	micaCred, err := tls.LoadX509KeyPair(filepath.Join(micaDir, fullchainFile), filepath.Join(micaDir, keyFile))
	if err != nil {
		t.Fatal(err)
	}
	serve := func(c tls.Certificate) string {
		return discovertest.Serve(t, "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{c}}).String()
	}
	appAddr, oldAddr, micaAddr := serve(app.TLS(otherInter.Cert)), serve(old.TLS(otherInter.Cert)), serve(micaCred)
	// A port below the ephemeral range (testaddr), on the address its
	// certificate names: once this server is gone, no other socket is
	// given the port before the rescan looks.
	selfLn, err := tls.Listen("tcp", testaddr.Localhost(t).String(), &tls.Config{Certificates: []tls.Certificate{self.TLS()}})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := selfLn.Accept()
			if err != nil {
				return
			}
			go func() { c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	selfAddr := selfLn.Addr().String()

	// nginx: mica's certificate with its chain, another CA's without.
	nginxDir := e.issue("nginx.svc.example.org", "web")
	legacy := discovertest.Issue(t, otherInter, discovertest.Spec{CN: "legacy.other.test", DNS: []string{"legacy.other.test"},
		NotBefore: now.Add(-time.Hour), NotAfter: later})
	as := newUnprivileged(t)
	ndir := as.dir(t, "mica-discover-nginx-")
	as.copyTo(t, ndir, map[string]string{
		"mica-fullchain.pem": filepath.Join(nginxDir, fullchainFile),
		"mica-key.pem":       filepath.Join(nginxDir, keyFile),
	})
	as.write(t, filepath.Join(ndir, "legacy.pem"), discovertest.PEM(legacy.Cert))
	as.write(t, filepath.Join(ndir, "legacy-key.pem"), discovertest.KeyPEM(t, legacy.Key))
	n := startNginxWith(t, nginxBin, ndir, as, nginxDiscoveryConf)
	nginxAddr := "127.0.0.1:" + strconv.Itoa(n.port)

	// A directory tree: mica's certificate with a key every user can
	// read, another CA's in DER, a self-signed one in PKCS#12.
	tree := filepath.Join(work, "tree")
	for _, d := range []string{work, filepath.Dir(work), tree, filepath.Join(tree, "web"), filepath.Join(tree, "der"), filepath.Join(tree, "p12")} {
		os.MkdirAll(d, 0o755)
		os.Chmod(d, 0o755)
	}
	copyFile(t, filepath.Join(micaDir, certFile), filepath.Join(tree, "web", "cert.pem"), 0o644)
	copyFile(t, filepath.Join(micaDir, keyFile), filepath.Join(tree, "web", "key.pem"), 0o644)
	derCert := discovertest.Issue(t, otherInter, discovertest.Spec{CN: "der.other.test", DNS: []string{"der.other.test"},
		NotBefore: now.Add(-time.Hour), NotAfter: later})
	discovertest.WriteFile(t, filepath.Join(tree, "der", "legacy.der"), derCert.Cert.Raw, 0o644)
	p12Cert := discovertest.Issue(t, nil, discovertest.Spec{CN: "keystore.test", DNS: []string{"keystore.test"}, NotBefore: now.Add(-time.Hour), NotAfter: later})
	discovertest.WriteFile(t, filepath.Join(work, "p12.pem"), discovertest.PEM(p12Cert.Cert), 0o600)
	discovertest.WriteFile(t, filepath.Join(work, "p12.key"), discovertest.KeyPEM(t, p12Cert.Key), 0o600)
	if out, err := execOut(opensslBin, "pkcs12", "-export", "-in", filepath.Join(work, "p12.pem"), "-inkey", filepath.Join(work, "p12.key"),
		"-passout", "pass:s3cret", "-out", filepath.Join(tree, "p12", "app.p12")); err != nil {
		t.Fatalf("openssl pkcs12: %v\n%s", err, out)
	}
	passFile := filepath.Join(work, "passphrases")
	discovertest.WriteFile(t, passFile, []byte("wrong\ns3cret\n"), 0o600)

	// Scan.
	out := e.micaOK("discover", "tls", appAddr, oldAddr, micaAddr, selfAddr)
	if !strings.Contains(out, "scanned 4 endpoints") || !strings.Contains(out, "4 certificates seen (4 new") {
		t.Errorf("discover tls (Go servers): %s", out)
	}
	out = e.micaOK("discover", "tls", nginxAddr, "--sni", "nginx.svc.example.org,legacy.other.test")
	if !strings.Contains(out, "scanned 3 endpoints") {
		t.Errorf("discover tls (nginx): %s", out)
	}
	out = e.micaOK("discover", "files", tree, "--passphrases", passFile, "--host", "host1.test", "--output", "json")
	var sum client.DiscoverySummary
	if err := json.Unmarshal([]byte(out), &sum); err != nil || sum.Sightings != 3 || sum.New != 2 {
		t.Errorf("discover files: %+v, %v\n%s", sum, err, out)
	}

	got := e.discovered(t)
	want := []struct {
		identity, class string
		findings        []string
		owner           string
		locations       []string
	}{
		{"app.other.test", "external", nil, "team-other", []string{"tls://" + appAddr}},
		{"old.other.test", "external", []string{"expired"}, "team-other", []string{"tls://" + oldAddr}},
		{"forgotten.test", "self-signed", []string{"self-signed"}, "", []string{"tls://" + selfAddr}},
		// Served by an address it does not name, and in a file on a host
		// it does not name, its key readable by all.
		{"tls.svc.example.org", "mica", []string{"key-world-readable", "mica-misplaced", "name-mismatch"}, e.adminOwner(),
			[]string{"tls://" + micaAddr, "file://host1.test" + filepath.Join(tree, "web", "cert.pem")}},
		{"nginx.svc.example.org", "mica", []string{"mica-misplaced", "name-mismatch"}, e.adminOwner(),
			[]string{"tls://" + nginxAddr, "tls://" + nginxAddr + "?sni=nginx.svc.example.org"}},
		{"legacy.other.test", "external", []string{"missing-intermediate"}, "team-other", []string{"tls://" + nginxAddr + "?sni=legacy.other.test"}},
		{"der.other.test", "external", nil, "team-other", []string{"file://host1.test" + filepath.Join(tree, "der", "legacy.der")}},
		{"keystore.test", "self-signed", []string{"self-signed"}, "team-files", []string{"file://host1.test" + filepath.Join(tree, "p12", "app.p12")}},
	}
	if len(got) != len(want) {
		t.Errorf("%d discovered certificates, want %d: %v", len(got), len(want), sortedKeys(got))
	}
	for _, w := range want {
		c, ok := got[w.identity]
		if !ok {
			t.Errorf("%s was not discovered", w.identity)
			continue
		}
		var locs []string
		for _, s := range c.Sightings {
			locs = append(locs, s.Location)
		}
		slices.Sort(locs)
		slices.Sort(w.locations)
		if c.Class != w.class || !slices.Equal(c.Findings, w.findings) || c.Owner != w.owner || !slices.Equal(locs, w.locations) {
			t.Errorf("%s: class %s, findings %v, owner %q, seen at %v;\n   want %s, %v, %q, %v", w.identity, c.Class, c.Findings, c.Owner, locs,
				w.class, w.findings, w.owner, w.locations)
		}
	}
	// The sighting by SNI has no findings: mica's nginx certificate is
	// clean where it is asked for by name.
	for _, s := range got["nginx.svc.example.org"].Sightings {
		if strings.HasSuffix(s.Location, "?sni=nginx.svc.example.org") && len(s.Findings) != 0 {
			t.Errorf("nginx by its name: findings %v", s.Findings)
		}
	}
	table := e.micaOK("cert", "list", "--source", "discovered", "--finding", "missing-intermediate")
	if !strings.Contains(table, "legacy.other.test") || strings.Contains(table, "app.other.test") {
		t.Errorf("cert list --finding missing-intermediate:\n%s", table)
	}

	// The expiry report holds the external certificate that expires in
	// 10 days, under its owner.
	var rep client.ExpiringReport
	if err := json.Unmarshal([]byte(e.micaOK("report", "expiring", "--within", "30d", "--output", "json")), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Discovered == nil || rep.Discovered.Total != 1 || rep.Discovered.Groups[0].Owner != "team-other" ||
		rep.Discovered.Groups[0].Certificates[0].Identity != "app.other.test" {
		t.Errorf("expiry report, discovered part: %+v", rep.Discovered)
	}
	if text := e.micaOK("report", "expiring", "--within", "30d"); !strings.Contains(text, "found deployed that mica did not issue") || !strings.Contains(text, "app.other.test") {
		t.Errorf("expiry report table:\n%s", text)
	}

	// Metrics, by class and window and by finding. The server counts
	// discovered certificates at most every 15 s, and something may have
	// scraped before the reports came in (the console samples the
	// registry), so the counts are waited for, within a deadline.
	wantMetrics := map[string]float64{
		`mica_discovered_certificates{class="external",expires_within="30d"}`:        1,
		`mica_discovered_certificates{class="external",expires_within="expired"}`:    1,
		`mica_discovered_certificates{class="self-signed",expires_within="more"}`:    2,
		`mica_discovered_certificates_with_finding{finding="missing-intermediate"}`:  1,
		`mica_discovered_certificates_with_finding{finding="key-world-readable"}`:    1,
		`mica_discovered_certificates_with_finding{finding="mica-not-in-inventory"}`: 0,
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		var wrong []string
		for sample, want := range wantMetrics {
			if got := scrapedValue(t, e.server.metricsURL, sample); got != want {
				wrong = append(wrong, fmt.Sprintf("%s = %v, want %v", sample, got, want))
			}
		}
		if len(wrong) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("after 30 s:\n%s", strings.Join(wrong, "\n"))
			break
		}
	}

	// The self-signed server goes away and the key file is removed: a
	// rescan records both, and the certificate that is seen nowhere now
	// is gone (an event says so).
	selfLn.Close()
	os.Remove(filepath.Join(tree, "web", "key.pem"))
	os.Remove(filepath.Join(tree, "p12", "app.p12"))
	out = e.micaOK("discover", "tls", appAddr, oldAddr, micaAddr, selfAddr)
	if !strings.Contains(out, "1 sightings ended, 1 certificates no longer seen") {
		t.Errorf("rescan: %s", out)
	}
	e.micaOK("discover", "files", tree, "--passphrases", passFile, "--host", "host1.test")
	got = e.discovered(t)
	if c := got["forgotten.test"]; c.GoneAt == nil || c.Sightings[0].GoneAt == nil {
		t.Errorf("the stopped server's certificate: %+v, want gone", c)
	}
	if c := got["keystore.test"]; c.GoneAt == nil {
		t.Errorf("the removed keystore's certificate: %+v, want gone", c)
	}
	if c := got["tls.svc.example.org"]; c.GoneAt != nil || slices.Contains(c.Findings, "key-world-readable") {
		t.Errorf("the mica certificate after its key file went: gone %v, findings %v", c.GoneAt, c.Findings)
	}
	events := e.micaOK("audit", "search", "--action", "cert.disappeared")
	if !strings.Contains(events, "forgotten.test") || !strings.Contains(events, "keystore.test") {
		t.Errorf("audit search cert.disappeared:\n%s", events)
	}
}

// adminOwner is who owns the certificates the test's admin enrolled.
func (e *testEnv) adminOwner() string { return "spiffe://example.org/mica/admin/admin" }

func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	discovertest.WriteFile(t, to, data, mode)
}

func execOut(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// TestDiscoverLoopbackNetwork scans a /24 of loopback addresses on three
// ports with `mica discover` and prints how long it took; then a scan
// slowed by --rate is interrupted and resumed from its state file, which
// reports every endpoint once.
func TestDiscoverLoopbackNetwork(t *testing.T) {
	if testing.Short() {
		t.Skip("scans 1,524 loopback endpoints")
	}
	e := newTestEnv(t, "sqlite")
	leaf := discovertest.Issue(t, nil, discovertest.Spec{CN: "lo.test", DNS: []string{"lo.test"}})
	var ports []string
	for _, host := range []string{"127.0.52.10", "127.0.52.99", "127.0.52.254"} {
		addr := discovertest.Serve(t, host+":0", &tls.Config{Certificates: []tls.Certificate{leaf.TLS()}})
		ports = append(ports, strconv.Itoa(addr.(*net.TCPAddr).Port))
	}
	start := time.Now()
	out := e.micaOK("discover", "tls", "127.0.52.0/24", "--ports", strings.Join(ports, ","), "--concurrency", "128", "--output", "json")
	elapsed := time.Since(start)
	var sum struct {
		Scan string `json:"scan"`
		client.DiscoverySummary
	}
	if err := json.Unmarshal([]byte(out), &sum); err != nil || sum.Sightings != 3 || !strings.HasPrefix(sum.Scan, "scanned 762 endpoints") {
		t.Fatalf("scan of the /24: %+v, %v\n%s", sum, err, out)
	}
	load, _ := os.ReadFile("/proc/loadavg")
	t.Logf("mica discover tls 127.0.52.0/24 on 3 ports (762 endpoints, concurrency 128): %s wall, the CLI's own figure %q; load average %s (shared 2-core machine: noisy)",
		elapsed.Round(time.Millisecond), sum.Scan, strings.Join(strings.Fields(string(load))[:3], " "))

	// Interrupt a slow scan once it has reported a part, then resume it.
	state := filepath.Join(t.TempDir(), "scan.state")
	cmd := exec.Command(binary(t), "discover", "tls", "127.0.53.0/24", "--ports", "1,2", "--rate", "50", "--state", state)
	cmd.Env = append(os.Environ(), e.env...)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first part to be reported", 60*time.Second, func() bool {
		data, _ := os.ReadFile(state)
		return strings.Count(string(data), "\n") > 1
	})
	cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	if err == nil || !strings.Contains(stderr.String(), "--state "+state) {
		t.Fatalf("the interrupted scan: %v\n%s", err, stderr.String())
	}
	data, _ := os.ReadFile(state)
	before := strings.Count(string(data), "\n") - 1
	r := e.mica("discover", "tls", "127.0.53.0/24", "--ports", "1,2", "--state", state, "--concurrency", "128")
	if r.code != 0 || !strings.Contains(r.stderr, fmt.Sprintf("%d endpoints were reported before", before)) ||
		!strings.Contains(r.stdout, fmt.Sprintf("scanned %d endpoints", 508-before)) {
		t.Errorf("the resumed scan (%d reported before): exit %d\n%s\n%s", before, r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("the state file of a finished scan is still there: %v", err)
	}
	t.Logf("interrupted after %d of 508 endpoints; the resumed scan probed the other %d", before, 508-before)
}

// TestAgentDiscovery: an agent whose profile the server lets report scans
// its host's files and reports them over mTLS with its own certificate.
func TestAgentDiscovery(t *testing.T) {
	e := newTestEnvWith(t, "sqlite", "discovery:\n  agent_profiles: [service]\n")
	dir := t.TempDir()
	self := discovertest.Issue(t, nil, discovertest.Spec{CN: "on-agent-host.test", DNS: []string{"on-agent-host.test"}})
	discovertest.WriteFile(t, filepath.Join(dir, "server.pem"), discovertest.PEM(self.Cert), 0o644)
	cfg := filepath.Join(t.TempDir(), "agent.yaml")
	discovertest.WriteFile(t, cfg, fmt.Appendf(nil, "discovery:\n  interval: 1h\n  paths: [%q]\n  host: agent-host.test\n", dir), 0o600)
	const id = "spiffe://example.org/billing/agent-with-discovery"
	tok := strings.TrimSpace(e.micaOK("token", "create", "--identity", id, "--profile", "service"))
	e.runAgent("--config", cfg, "--token", tok, "--out", filepath.Join(t.TempDir(), "cred"))
	var c client.DiscoveredCertificate
	waitFor(t, "the agent's report", 60*time.Second, func() bool {
		c = e.discovered(t)["on-agent-host.test"]
		return len(c.Sightings) == 1
	})
	if s := c.Sightings[0]; s.Reporter != id || s.Location != "file://agent-host.test"+filepath.Join(dir, "server.pem") || c.Class != "self-signed" {
		t.Errorf("reported %+v, sighting %+v", c, s)
	}
}
