package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/miekg/dns"
	xacme "golang.org/x/crypto/acme"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/testaddr"
)

// acmeConfig adds an ACME profile and the acme section to the test config:
// names under acme.test, challenge ports and a resolver the test runs.
const acmeConfig = testConfig + `  acme-web:
    dns: ["*.acme.test"]
    default_ttl: 24h
    key_types: [ecdsa-p256, ecdsa-p384, rsa]
    ext_key_usage: [serverAuth]
acme:
  profile: acme-web
  http01_port: %HTTP%
  tlsalpn01_port: %TLS%
  resolver: %DNS%
`

// acmeEnv is a mica server with ACME on, a DNS server for acme.test, and the
// addresses clients answer challenges on: one loopback address that every
// name resolves to, with the http-01 and the tls-alpn-01 port.
type acmeEnv struct {
	*testEnv
	http, tls netip.AddrPort
	dns       *testDNS
	directory string
	rootPEM   string
}

func newACMEEnv(t *testing.T) *acmeEnv {
	t.Helper()
	a := prepareACMEEnv(t, acmeConfig)
	a.start()
	a.directory = a.server.url + "/acme/directory"
	return a
}

// prepareACMEEnv writes config (acmeConfig or a variant) into a fresh data
// directory and runs init; the server is not started.
func prepareACMEEnv(t *testing.T, config string) *acmeEnv {
	t.Helper()
	// The clients bind the challenge ports themselves: testaddr's ports
	// stay free until they do.
	challenge := testaddr.Ports(t, 2)
	a := &acmeEnv{http: challenge[0], tls: challenge[1], dns: startTestDNS(t, challenge[0].Addr())}
	e := &testEnv{t: t, root: t, dataDir: filepath.Join(t.TempDir(), "data"), engine: "sqlite"}
	e.env = []string{"MICA_PASSPHRASE=" + testPassphrase, "MICA_DATA_DIR=" + e.dataDir}
	if err := os.MkdirAll(e.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := strings.NewReplacer("%DB%", `""`, "%HTTP%", fmt.Sprint(a.http.Port()), "%TLS%", fmt.Sprint(a.tls.Port()), "%DNS%", a.dns.addr).Replace(config)
	if err := os.WriteFile(filepath.Join(e.dataDir, configFileName), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	e.micaOK("init", "--trust-domain", "example.org")
	a.testEnv = e
	a.rootPEM = filepath.Join(e.dataDir, "ca", "root.pem")
	return a
}

// testDNS answers A a (the challenge address) for every name under
// acme.test, and TXT records from files in dir named for the record
// (written by lego's exec provider), so that mica's validator and lego
// agree on one zone.
type testDNS struct {
	addr, dir string
	a         netip.Addr
}

func startTestDNS(t *testing.T, a netip.Addr) *testDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &testDNS{addr: pc.LocalAddr().String(), dir: t.TempDir(), a: a}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(d.serve)}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return d
}

func (d *testDNS) serve(w dns.ResponseWriter, q *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	for _, qq := range q.Question {
		name := strings.ToLower(qq.Name)
		if !strings.HasSuffix(name, "acme.test.") {
			m.Rcode = dns.RcodeNameError
			continue
		}
		hdr := dns.RR_Header{Name: qq.Name, Class: dns.ClassINET, Rrtype: qq.Qtype, Ttl: 0}
		switch qq.Qtype {
		case dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: d.a.AsSlice()})
		case dns.TypeTXT:
			data, _ := os.ReadFile(filepath.Join(d.dir, strings.TrimSuffix(name, ".")))
			for _, line := range strings.Fields(string(data)) {
				m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr, Txt: []string{line}})
			}
		case dns.TypeSOA:
			m.Answer = append(m.Answer, &dns.SOA{Hdr: dns.RR_Header{Name: "acme.test.", Class: dns.ClassINET, Rrtype: dns.TypeSOA},
				Ns: "ns.acme.test.", Mbox: "hostmaster.acme.test.", Serial: 1, Refresh: 60, Retry: 60, Expire: 60, Minttl: 0})
		}
	}
	w.WriteMsg(m)
}

// run runs an external ACME client and fails the test with its output.
func (a *acmeEnv) run(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s\nserver log:\n%s", name, strings.Join(args, " "), err, out, a.server.logs.String())
	}
	return string(out)
}

// verifyIssued checks a PEM certificate with openssl against the mica root,
// finds it in `mica cert list`, and returns its serial.
func (a *acmeEnv) verifyIssued(t *testing.T, certPath, chainPath, name string) string {
	t.Helper()
	args := []string{"verify", "-CAfile", a.rootPEM}
	if chainPath != "" {
		args = append(args, "-untrusted", chainPath)
	}
	out, err := exec.Command("openssl", append(args, certPath)...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": OK") {
		t.Fatalf("openssl verify %s: %v\n%s", certPath, err, out)
	}
	data, err := os.ReadFile(certPath)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(data)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.DNSNames) != 1 || cert.DNSNames[0] != name {
		t.Errorf("certificate names %v, want [%s]", cert.DNSNames, name)
	}
	serial := cert.SerialNumber.Text(16)
	if list := a.micaOK("cert", "list"); !strings.Contains(list, serial) {
		t.Errorf("mica cert list does not show %s:\n%s", serial, list)
	}
	return serial
}

func (a *acmeEnv) status(t *testing.T, serial string) string {
	t.Helper()
	rec, err := a.admin.Certificate(context.Background(), serial)
	if err != nil {
		t.Fatal(err)
	}
	return rec.Status
}

func TestACME(t *testing.T) {
	a := newACMEEnv(t)
	run := func(name string, f func(*testing.T)) {
		t.Run(name, func(t *testing.T) {
			parent := a.t
			a.t = t
			defer func() { a.t = parent }()
			f(t)
		})
	}
	run("Certbot", a.testCertbot)
	run("LegoHTTP01", func(t *testing.T) {
		a.testLego(t, "lh.acme.test", "--http", "--http.port", a.http.String())
	})
	run("LegoTLSALPN01", func(t *testing.T) {
		a.testLego(t, "lt.acme.test", "--tls", "--tls.port", a.tls.String())
	})
	run("LegoDNS01", a.testLegoDNS)
	run("Errors", a.testErrors)
	run("AccountLifecycle", a.testAccountLifecycle)
	run("ForgedHost", a.testForgedHost)
	run("BenchACME", a.testBenchACME)
}

func (a *acmeEnv) testCertbot(t *testing.T) {
	toolPath(t, "certbot")
	dir := t.TempDir()
	env := []string{"REQUESTS_CA_BUNDLE=" + a.rootPEM}
	common := []string{"--non-interactive", "--server", a.directory, "--config-dir", filepath.Join(dir, "config"),
		"--work-dir", filepath.Join(dir, "work"), "--logs-dir", filepath.Join(dir, "logs")}
	name := "cb.acme.test"
	obtain := append([]string{"certonly", "--standalone", "--agree-tos", "--register-unsafely-without-email",
		"--http-01-port", fmt.Sprint(a.http.Port()), "--http-01-address", a.http.Addr().String(), "-d", name}, common...)
	a.run(t, env, "certbot", obtain...)
	live := filepath.Join(dir, "config", "live", name)
	first := a.verifyIssued(t, filepath.Join(live, "cert.pem"), filepath.Join(live, "chain.pem"), name)

	a.run(t, env, "certbot", append([]string{"renew", "--force-renewal", "--no-random-sleep-on-renew"}, common...)...)
	second := a.verifyIssued(t, filepath.Join(live, "cert.pem"), filepath.Join(live, "chain.pem"), name)
	if first == second {
		t.Fatalf("renewal returned the same certificate %s", first)
	}

	// Revoke the first with the account, the renewed one with its own key.
	archive := filepath.Join(dir, "config", "archive", name)
	a.run(t, env, "certbot", append([]string{"revoke", "--no-delete-after-revoke", "--cert-path", filepath.Join(archive, "cert1.pem")}, common...)...)
	a.run(t, env, "certbot", append([]string{"revoke", "--no-delete-after-revoke", "--cert-path", filepath.Join(archive, "cert2.pem"),
		"--key-path", filepath.Join(archive, "privkey2.pem"), "--reason", "keycompromise"}, common...)...)
	for _, s := range []string{first, second} {
		if got := a.status(t, s); got != "revoked" {
			t.Errorf("certificate %s is %s after certbot revoke, want revoked", s, got)
		}
	}
}

func (a *acmeEnv) legoArgs(dir, name string, challenge ...string) []string {
	return append([]string{"--server", a.directory, "--email", "ops@example.org", "--accept-tos", "--path", dir,
		"--domains", name}, challenge...)
}

func (a *acmeEnv) testLego(t *testing.T, name string, challenge ...string) {
	toolPath(t, "lego")
	dir := t.TempDir()
	env := []string{"LEGO_CA_CERTIFICATES=" + a.rootPEM}
	args := a.legoArgs(dir, name, challenge...)
	crt := filepath.Join(dir, "certificates", name+".crt")
	issuer := filepath.Join(dir, "certificates", name+".issuer.crt")
	a.run(t, env, "lego", append(args, "run")...)
	first := a.verifyIssued(t, crt, issuer, name)
	a.run(t, env, "lego", append(args, "renew", "--days", "3650", "--no-random-sleep")...)
	second := a.verifyIssued(t, crt, issuer, name)
	if first == second {
		t.Fatalf("renewal returned the same certificate %s", first)
	}
	a.run(t, env, "lego", append(args, "revoke")...)
	if got := a.status(t, second); got != "revoked" {
		t.Errorf("certificate %s is %s after lego revoke, want revoked", second, got)
	}
}

func (a *acmeEnv) testLegoDNS(t *testing.T) {
	toolPath(t, "lego")
	script := filepath.Join(t.TempDir(), "dns-hook")
	body := fmt.Sprintf("#!/bin/sh\nf=%q/$(echo \"$2\" | sed 's/\\.$//' | tr A-Z a-z)\ncase \"$1\" in present) echo \"$3\" >> \"$f\";; cleanup) rm -f \"$f\";; esac\n", a.dns.dir)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("EXEC_PATH", script)
	t.Setenv("EXEC_PROPAGATION_TIMEOUT", "30")
	t.Setenv("EXEC_POLLING_INTERVAL", "1")
	a.testLego(t, "ld.acme.test", "--dns", "exec", "--dns.resolvers", a.dns.addr, "--dns.disable-cp")
}

// rawClient speaks just enough ACME to send deliberately wrong requests.
type rawClient struct {
	t    *testing.T
	dir  map[string]string
	key  *ecdsa.PrivateKey
	kid  string
	http *http.Client
}

func (a *acmeEnv) rawClient(t *testing.T) *rawClient {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c := &rawClient{t: t, key: key, http: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: a.roots}}}}
	resp, err := c.http.Get(a.directory)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var dir map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&dir); err != nil {
		t.Fatal(err)
	}
	c.dir = map[string]string{}
	for k, v := range dir {
		if s, ok := v.(string); ok {
			c.dir[k] = s
		}
	}
	return c
}

func (c *rawClient) nonce() string {
	resp, err := c.http.Head(c.dir["newNonce"])
	if err != nil {
		c.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.Header.Get("Replay-Nonce")
}

// sign makes a flattened JWS with the given header values.
func (c *rawClient) sign(url, nonce string, payload []byte) []byte {
	opts := &jose.SignerOptions{ExtraHeaders: map[jose.HeaderKey]any{"url": url, "nonce": nonce}}
	if c.kid != "" {
		opts.ExtraHeaders["kid"] = c.kid
	} else {
		opts.EmbedJWK = true
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: c.key}, opts)
	if err != nil {
		c.t.Fatal(err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		c.t.Fatal(err)
	}
	// go-jose leaves an empty payload out; ACME wants it present and empty.
	var flat map[string]any
	json.Unmarshal([]byte(jws.FullSerialize()), &flat)
	if _, ok := flat["payload"]; !ok {
		flat["payload"] = ""
	}
	out, _ := json.Marshal(flat)
	return out
}

type acmeAnswer struct {
	status   int
	problem  string
	location string
	body     map[string]any
}

func (c *rawClient) post(url string, body []byte) acmeAnswer {
	c.t.Helper()
	resp, err := c.http.Post(url, "application/jose+json", strings.NewReader(string(body)))
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	ans := acmeAnswer{status: resp.StatusCode, location: resp.Header.Get("Location")}
	json.Unmarshal(data, &ans.body)
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") {
		ans.problem, _ = ans.body["type"].(string)
	}
	return ans
}

func (c *rawClient) signedPost(url string, payload any) acmeAnswer {
	c.t.Helper()
	var data []byte
	if payload != nil {
		data, _ = json.Marshal(payload)
	}
	return c.post(url, c.sign(url, c.nonce(), data))
}

func (a *acmeEnv) testErrors(t *testing.T) {
	c := a.rawClient(t)
	ctx := context.Background()
	before, err := a.admin.ListCertificates(ctx, client.ListFilter{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	acct := c.signedPost(c.dir["newAccount"], map[string]any{"termsOfServiceAgreed": true})
	if acct.status != http.StatusCreated {
		t.Fatalf("newAccount: %d %v", acct.status, acct.body)
	}
	c.kid = acct.location
	reused := c.nonce()
	if ans := c.post(c.dir["newOrder"], c.sign(c.dir["newOrder"], reused, []byte(`{"identifiers":[{"type":"dns","value":"ok.acme.test"}]}`))); ans.status != http.StatusCreated {
		t.Fatalf("newOrder: %d %v", ans.status, ans.body)
	}
	failOrder := c.signedPost(c.dir["newOrder"], map[string]any{"identifiers": []map[string]string{{"type": "dns", "value": "nobody.acme.test"}}})
	if failOrder.status != http.StatusCreated {
		t.Fatalf("newOrder: %d %v", failOrder.status, failOrder.body)
	}

	const ns = "urn:ietf:params:acme:error:"
	tests := []struct {
		name string
		send func() acmeAnswer
		want string
	}{
		{"MalformedJWS", func() acmeAnswer {
			return c.post(c.dir["newOrder"], []byte(`{"protected": "not base64!", "payload": "", "signature": "x"}`))
		}, ns + "malformed"},
		{"NotJSON", func() acmeAnswer { return c.post(c.dir["newOrder"], []byte(`eyJhbGciOiJFUzI1NiJ9.e30.sig`)) }, ns + "malformed"},
		{"ReusedNonce", func() acmeAnswer {
			return c.post(c.dir["newOrder"], c.sign(c.dir["newOrder"], reused, []byte(`{"identifiers":[{"type":"dns","value":"ok.acme.test"}]}`)))
		}, ns + "badNonce"},
		{"WrongURL", func() acmeAnswer {
			return c.post(c.dir["newOrder"], c.sign(c.dir["revokeCert"], c.nonce(), []byte(`{"identifiers":[{"type":"dns","value":"ok.acme.test"}]}`)))
		}, ns + "unauthorized"},
		{"IdentifierNotAllowed", func() acmeAnswer {
			return c.signedPost(c.dir["newOrder"], map[string]any{"identifiers": []map[string]string{{"type": "dns", "value": "www.example.com"}}})
		}, ns + "rejectedIdentifier"},
		{"FailedChallenge", func() acmeAnswer {
			authzURL := failOrder.body["authorizations"].([]any)[0].(string)
			authz := c.signedPost(authzURL, nil)
			if authz.status != http.StatusOK {
				t.Fatalf("authz: %d %v", authz.status, authz.body)
			}
			for _, ch := range authz.body["challenges"].([]any) {
				ch := ch.(map[string]any)
				if ch["type"] == "http-01" {
					c.signedPost(ch["url"].(string), map[string]any{}) // nothing answers on the http-01 port
				}
			}
			// An ACME client learns the outcome by polling the
			// authorization; the deadline bounds a validator that hangs.
			deadline := time.Now().Add(30 * time.Second)
			for {
				if time.Now().After(deadline) {
					t.Fatal("the authorization is still pending 30s after its challenge failed")
				}
				if z := c.signedPost(authzURL, nil); z.body["status"] != "pending" {
					if z.body["status"] != "invalid" {
						t.Errorf("authorization is %v after a failed challenge, want invalid", z.body["status"])
					}
					for _, ch := range z.body["challenges"].([]any) {
						ch := ch.(map[string]any)
						if e, _ := ch["error"].(map[string]any); ch["type"] == "http-01" && e["type"] != ns+"connection" {
							t.Errorf("failed http-01 challenge has error %v, want %sconnection", e, ns)
						}
					}
					break
				}
				time.Sleep(200 * time.Millisecond) // the server validates in its own process: polled, within the deadline
			}
			csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"nobody.acme.test"}}, c.key)
			return c.signedPost(failOrder.body["finalize"].(string), map[string]string{"csr": b64(csr)})
		}, ns + "orderNotReady"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if ans := tt.send(); ans.problem != tt.want {
				t.Errorf("got %d %q (%v), want %s", ans.status, ans.problem, ans.body["detail"], tt.want)
			}
		})
	}
	after, err := a.admin.ListCertificates(ctx, client.ListFilter{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("%d certificates were issued by refused requests", len(after)-len(before))
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// testAccountLifecycle drives account update, key rollover, order listing
// and deactivation with golang.org/x/crypto/acme.
func (a *acmeEnv) testAccountLifecycle(t *testing.T) {
	ctx := context.Background()
	oldKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	newKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c := &xacme.Client{Key: oldKey, DirectoryURL: a.directory,
		HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: a.roots}}}}
	if _, err := c.Register(ctx, &xacme.Account{Contact: []string{"mailto:ops@example.org"}}, xacme.AcceptTOS); err != nil {
		t.Fatalf("Register: %v", err)
	}
	if _, err := c.UpdateReg(ctx, &xacme.Account{Contact: []string{"mailto:team@example.org"}}); err != nil {
		t.Fatalf("UpdateReg: %v", err)
	}
	if _, err := c.AuthorizeOrder(ctx, xacme.DomainIDs("list.acme.test")); err != nil {
		t.Fatalf("AuthorizeOrder: %v", err)
	}
	if err := c.AccountKeyRollover(ctx, newKey); err != nil {
		t.Fatalf("AccountKeyRollover: %v", err)
	}
	acct, err := c.GetReg(ctx, "")
	if err != nil || len(acct.Contact) != 1 || acct.Contact[0] != "mailto:team@example.org" {
		t.Fatalf("GetReg with the new key = %+v, %v", acct, err)
	}
	old := &xacme.Client{Key: oldKey, DirectoryURL: a.directory, HTTPClient: c.HTTPClient}
	if _, err := old.GetReg(ctx, ""); err == nil {
		t.Error("the old key still finds the account after a key rollover")
	}
	if err := c.DeactivateReg(ctx); err != nil {
		t.Fatalf("DeactivateReg: %v", err)
	}
	if _, err := c.AuthorizeOrder(ctx, xacme.DomainIDs("list.acme.test")); err == nil {
		t.Error("a deactivated account could still order")
	}
}

// testBenchACME runs `mica bench acme` briefly: the figure is printed, never asserted.
func (a *acmeEnv) testBenchACME(t *testing.T) {
	out := a.micaOK("bench", "acme", "--concurrency", "2", "--duration", "1s", "--json")
	var res struct {
		Orders int `json:"orders"`
		Errors int `json:"errors"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Orders == 0 || res.Errors != 0 {
		t.Fatalf("bench acme: %v\n%s", err, out)
	}
}

// testForgedHost: the door's URLs are https://<first server name>:<API
// port>/acme/ whatever Host a request names, and a JWS signed for the
// forged host's URL creates nothing.
func (a *acmeEnv) testForgedHost(t *testing.T) {
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(a.server.url, "https://"))
	want := "https://" + net.JoinHostPort("localhost", port) + "/acme/"
	c := a.rawClient(t) // reads the directory through 127.0.0.1
	for k, u := range c.dir {
		if !strings.HasPrefix(u, want) {
			t.Errorf("directory %s = %q, want it under %s", k, u, want)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, a.directory, nil)
	req.Host = "evil.example"
	resp, err := c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var dir map[string]any
	json.NewDecoder(resp.Body).Decode(&dir)
	resp.Body.Close()
	if u, _ := dir["newAccount"].(string); u != want+"new-account" {
		t.Errorf("newAccount with Host evil.example = %q, want %s", u, want+"new-account")
	}
	forged := strings.Replace(c.dir["newAccount"], "localhost", "evil.example", 1)
	body := c.sign(forged, c.nonce(), []byte(`{"termsOfServiceAgreed":true}`))
	req, _ = http.NewRequest(http.MethodPost, a.server.url+"/acme/new-account", strings.NewReader(string(body)))
	req.Host = "evil.example:" + port
	req.Header.Set("Content-Type", "application/jose+json")
	resp, err = c.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Location") != "" {
		t.Errorf("newAccount signed for %s: %s, Location %q; want 403 and no account", forged, resp.Status, resp.Header.Get("Location"))
	}
}

// acmeReservedConfig lets the ACME profile reach mica's own server names
// (api.acme.test, 127.0.0.1): the reserved-name rule must still keep them
// from ACME accounts.
var acmeReservedConfig = "server_names: [localhost, 127.0.0.1, api.acme.test]\n" + strings.Replace(acmeConfig, "acme:\n  profile: acme-web\n",
	"  acme-lab:\n    dns: [\"*.acme.test\"]\n    ips: [\"127.0.0.0/8\"]\n    ext_key_usage: [serverAuth]\nacme:\n  profile: acme-lab\n", 1)

// TestACMEReservedNames: the names of mica's own API cannot be ordered
// over ACME, even with a profile whose patterns cover them — refused when
// the config is checked, or when the order is placed.
func TestACMEReservedNames(t *testing.T) {
	a := prepareACMEEnv(t, acmeReservedConfig)
	cfg := filepath.Join(a.dataDir, configFileName)
	if r := a.mica("policy", "check", cfg); r.code != 0 {
		if !strings.Contains(r.stderr, "api.acme.test") && !strings.Contains(r.stderr, "127.0.0.1") {
			t.Fatalf("policy check refused the config without naming the reserved name:\n%s", r.stderr)
		}
		return // refused at the config: no server can offer them
	}
	a.start()
	a.directory = a.server.url + "/acme/directory"
	c := a.rawClient(t)
	acct := c.signedPost(c.dir["newAccount"], map[string]any{"termsOfServiceAgreed": true})
	if acct.status != http.StatusCreated {
		t.Fatalf("newAccount: %d %v", acct.status, acct.body)
	}
	c.kid = acct.location
	order := func(typ, value string) acmeAnswer {
		return c.signedPost(c.dir["newOrder"], map[string]any{"identifiers": []map[string]string{{"type": typ, "value": value}}})
	}
	for _, id := range [][2]string{{"dns", "api.acme.test"}, {"ip", "127.0.0.1"}} {
		if ans := order(id[0], id[1]); ans.problem != "urn:ietf:params:acme:error:rejectedIdentifier" {
			t.Errorf("order for mica's own name %s: %d %q (%v), want rejectedIdentifier", id[1], ans.status, ans.problem, ans.body["detail"])
		}
	}
	// Names the profile covers that are not mica's own are fine.
	for _, id := range [][2]string{{"dns", "www.acme.test"}, {"ip", "127.0.0.2"}} {
		if ans := order(id[0], id[1]); ans.status != http.StatusCreated {
			t.Errorf("order for %s: %d %v, want created", id[1], ans.status, ans.body)
		}
	}
}
