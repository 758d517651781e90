package acme

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/miekg/dns"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/authority/authoritytest"
	"github.com/mica-pki/mica/internal/policy"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/postgres"
	"github.com/mica-pki/mica/internal/store/postgres/pgtest"
	"github.com/mica-pki/mica/internal/store/sqlite"
)

// The tests in this package drive the ACME door the way a client does —
// JWS over HTTP, with challenges really validated over loopback — against
// a real authority (throwaway CA, policy, zlint) and each store engine.

var cluster pgtest.Cluster

func TestMain(m *testing.M) { os.Exit(cluster.Run(m)) }

// testURL is the door's configured URL in these tests; requests reach the
// handler directly, so no server answers at it.
const testURL = "https://ca.test/acme/"

// engines runs f once per store engine. PostgreSQL is left out of -short
// runs, which need nothing but Go.
func engines(t *testing.T, f func(t *testing.T, e *engine)) {
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "mica.db")
		f(t, &engine{name: "sqlite", sqlitePath: path, open: func(t *testing.T) testStore { return openSQLite(t, path) }})
	})
	t.Run("postgres", func(t *testing.T) {
		if testing.Short() {
			t.Skip("PostgreSQL is not started in -short runs")
		}
		url := cluster.Database(t)
		f(t, &engine{name: "postgres", open: func(t *testing.T) testStore {
			st, err := postgres.Open(context.Background(), url)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		}})
	})
}

func openSQLite(t *testing.T, path string) testStore {
	t.Helper()
	st, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// engine opens stores on one test database: each open is one server
// process's connection, so two opens are two replicas, or a server before
// and after a restart.
type engine struct {
	name       string
	sqlitePath string // the SQLite file, to watch its WAL
	open       func(t *testing.T) testStore
}

// testStore is an engine's store: the door's part and the authority's.
type testStore interface {
	Store
	authority.Store
}

// testClock is the clock every part of one test shares.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is one ACME door on a real authority, with a DNS server that points
// every name under acme.test at 127.0.0.1 and an http-01 responder there.
type env struct {
	t       *testing.T
	store   testStore
	clock   *testClock
	fixture *authoritytest.Fixture
	srv     *Server
	answers *sync.Map // http-01 token → key authorization
	set     Settings
}

// webProfile is the profile ACME orders are issued under in these tests.
var webProfile = policy.ProfileConfig{DNS: []string{"*.acme.test"}, ExtKeyUsage: []string{"serverAuth"}}

func newEnv(t *testing.T, e *engine) *env {
	t.Helper()
	st := e.open(t)
	clock := &testClock{t: time.Now().UTC().Truncate(time.Second)}
	pc := authoritytest.PolicyConfig()
	pc.Profiles["web"] = webProfile
	eng, err := policy.New(pc)
	if err != nil {
		t.Fatal(err)
	}
	fx := authoritytest.NewWith(t, func(cfg *authority.Config) {
		cfg.Store, cfg.Policy, cfg.Clock = st, eng, clock.Now
	})
	v := &env{t: t, store: st, clock: clock, fixture: fx, answers: &sync.Map{}}
	v.set = Settings{Profile: "web", URL: testURL, HTTP01Port: v.startHTTP01(), Resolver: startDNS(t)}
	v.srv = v.newServer(st)
	return v
}

// newServer is another server process on the same database and clock, as
// a replica or after a restart.
func (v *env) newServer(st Store) *Server {
	v.t.Helper()
	srv, err := New(Config{Authority: v.fixture.Authority, Store: st, Settings: v.set, Clock: v.clock.Now,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		v.t.Fatal(err)
	}
	// A challenge response then always carries the validation's outcome,
	// so tests wait on it instead of polling.
	srv.validationWait = time.Minute
	return srv
}

func (v *env) startHTTP01() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		v.t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := strings.TrimPrefix(r.URL.Path, "/.well-known/acme-challenge/")
		if ka, ok := v.answers.Load(tok); ok {
			io.WriteString(w, ka.(string))
			return
		}
		http.NotFound(w, r)
	})}
	go hs.Serve(ln)
	v.t.Cleanup(func() { hs.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// startDNS answers A 127.0.0.1 for every name under acme.test.
func startDNS(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, qq := range q.Question {
			if !strings.HasSuffix(strings.ToLower(qq.Name), "acme.test.") {
				m.Rcode = dns.RcodeNameError
				continue
			}
			if qq.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET}, A: net.IPv4(127, 0, 0, 1)})
			}
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// answer is one HTTP answer of the door.
type answer struct {
	status   int
	header   http.Header
	body     []byte
	problem  string // the ACME error type without its namespace, "" if none
	location string
}

func (a answer) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(a.body, &m); err != nil {
		t.Fatalf("answer %d is not JSON: %v\n%s", a.status, err, a.body)
	}
	return m
}

func (a answer) String() string { return fmt.Sprintf("%d %s", a.status, a.body) }

// do sends one request to srv's handler, as if to url (so the Host header
// is url's host unless host is set).
func do(srv *Server, method, url, host string, ctype string, body []byte) answer {
	r := httptest.NewRequest(method, url, bytes.NewReader(body))
	if host != "" {
		r.Host = host
	}
	if ctype != "" {
		r.Header.Set("Content-Type", ctype)
	}
	r.RemoteAddr = "127.0.0.1:1234" // no socket: a port for the address only
	w := httptest.NewRecorder()
	srv.Handler().ServeHTTP(w, r)
	a := answer{status: w.Code, header: w.Header(), body: w.Body.Bytes(), location: w.Header().Get("Location")}
	if strings.HasPrefix(w.Header().Get("Content-Type"), "application/problem+json") {
		var p problem
		json.Unmarshal(a.body, &p)
		a.problem = strings.TrimPrefix(p.Type, errorNS)
	}
	return a
}

// client is an ACME client with an ECDSA P-256 account key.
type client struct {
	t   *testing.T
	v   *env
	srv *Server // where requests go; v.srv unless changed
	key *ecdsa.PrivateKey
	kid string
}

func (v *env) client() *client {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		v.t.Fatal(err)
	}
	return &client{t: v.t, v: v, srv: v.srv, key: key}
}

func (c *client) nonce() string {
	c.t.Helper()
	a := do(c.srv, http.MethodHead, testURL+"new-nonce", "", "", nil)
	n := a.header.Get("Replay-Nonce")
	if a.status != http.StatusOK || n == "" {
		c.t.Fatalf("newNonce: %v", a)
	}
	return n
}

func jwkJSON(t testing.TB, key crypto.Signer) json.RawMessage {
	b, err := (&jose.JSONWebKey{Key: key.Public()}).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// header is the protected header c sends to url: kid once it has an
// account, else its jwk.
func (c *client) header(url, nonce string) map[string]any {
	h := map[string]any{"alg": "ES256", "nonce": nonce, "url": url}
	if c.kid != "" {
		h["kid"] = c.kid
	} else {
		h["jwk"] = jwkJSON(c.t, c.key)
	}
	return h
}

// rawJWS signs payload under the protected header exactly as given, so
// that tests can send headers no JWS library would make.
func rawJWS(t testing.TB, key *ecdsa.PrivateKey, protected string, payload []byte) []byte {
	t.Helper()
	p64 := base64.RawURLEncoding.EncodeToString([]byte(protected))
	b64 := base64.RawURLEncoding.EncodeToString(payload)
	sum := sha256.Sum256([]byte(p64 + "." + b64))
	r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return []byte(`{"protected":"` + p64 + `","payload":"` + b64 + `","signature":"` + base64.RawURLEncoding.EncodeToString(sig) + `"}`)
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	if v == nil {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// post signs payload (nil for POST-as-GET) for url with a fresh nonce.
func (c *client) post(url string, payload any) answer {
	c.t.Helper()
	body := rawJWS(c.t, c.key, string(mustJSON(c.t, c.header(url, c.nonce()))), mustJSON(c.t, payload))
	return do(c.srv, http.MethodPost, url, "", "application/jose+json", body)
}

func (c *client) register() {
	c.t.Helper()
	a := c.post(testURL+"new-account", map[string]any{"termsOfServiceAgreed": true})
	if a.status != http.StatusCreated || a.location == "" {
		c.t.Fatalf("newAccount: %v", a)
	}
	c.kid = a.location
}

// order is an order as the client sees it.
type clientOrder struct {
	url  string
	body map[string]any
}

func (o clientOrder) authzs() []string {
	var out []string
	for _, u := range o.body["authorizations"].([]any) {
		out = append(out, u.(string))
	}
	return out
}

func (c *client) newOrder(names ...string) clientOrder {
	c.t.Helper()
	var ids []map[string]string
	for _, n := range names {
		ids = append(ids, map[string]string{"type": "dns", "value": n})
	}
	a := c.post(testURL+"new-order", map[string]any{"identifiers": ids})
	if a.status != http.StatusCreated {
		c.t.Fatalf("newOrder %v: %v", names, a)
	}
	return clientOrder{url: a.location, body: a.json(c.t)}
}

func (c *client) thumbprint() string {
	tp, err := (&jose.JSONWebKey{Key: c.key.Public()}).Thumbprint(crypto.SHA256)
	if err != nil {
		c.t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(tp)
}

// solve answers the http-01 challenge of every authorization of o; each
// must be valid once its challenge response returns.
func (c *client) solve(o clientOrder) {
	c.t.Helper()
	for _, zu := range o.authzs() {
		z := c.post(zu, nil).json(c.t)
		var chURL string
		for _, ch := range z["challenges"].([]any) {
			ch := ch.(map[string]any)
			if ch["type"] == challengeHTTP01 {
				chURL = ch["url"].(string)
				c.v.answers.Store(ch["token"].(string), ch["token"].(string)+"."+c.thumbprint())
			}
		}
		if ch := c.post(chURL, map[string]any{}).json(c.t); ch["status"] != statusValid {
			c.t.Fatalf("http-01 challenge for %s: %v", zu, ch)
		}
		if st := c.post(zu, nil).json(c.t)["status"]; st != statusValid {
			c.t.Fatalf("authorization %s is %v after its http-01 challenge", zu, st)
		}
	}
}

// readyOrder is an order for names with every authorization valid.
func (c *client) readyOrder(names ...string) clientOrder {
	c.t.Helper()
	o := c.newOrder(names...)
	c.solve(o)
	if st := c.post(o.url, nil).json(c.t)["status"]; st != statusReady {
		c.t.Fatalf("order is %v after its authorizations, want ready", st)
	}
	return o
}

// csr makes a CSR for names with a fresh P-256 key.
func csrFor(t testing.TB, names ...string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return csrWith(t, key, &x509.CertificateRequest{DNSNames: names})
}

func csrWith(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func (c *client) finalize(o clientOrder, csr []byte) answer {
	c.t.Helper()
	return c.post(o.body["finalize"].(string), map[string]string{"csr": base64.RawURLEncoding.EncodeToString(csr)})
}

var storeFilterAll = store.Filter{Limit: 10000}

// certCount is how many certificates the inventory holds.
func (v *env) certCount() int {
	v.t.Helper()
	n, err := v.fixture.Authority.ListCertificates(context.Background(), v.fixture.Admin, storeFilterAll)
	if err != nil {
		v.t.Fatal(err)
	}
	return len(n)
}
