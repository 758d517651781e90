package bench

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math/big"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/ca"
	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/mtls"
	"github.com/mica-pki/mica/mtls/mtlsprom"
	"github.com/mica-pki/mica/revocation"
)

// handshakeBench is what every measurement of `mica bench handshake` shares:
// one CA, one server and one client credential, and the two pairs of
// configs compared — plain crypto/tls mutual TLS and the mtls package. A
// further section (see handshakeSections) gets it whole.
type handshakeBench struct {
	concurrency int
	slot        time.Duration // one measurement of one case in one round
	rounds      int

	root, intermediate *x509.Certificate
	server, client     tls.Certificate
	serverName         string // the server's DNS name, for crypto/tls's host name check
	serverID           string // its SPIFFE ID, for mtls's identity check
	revoked            *revocation.Set
	metrics            *prometheus.Registry

	// peers are distinct client certificates (one key, many serials) for
	// handshakes by clients the server has not seen recently.
	peers    []tls.Certificate
	peerNext atomic.Uint64

	plainServer, plainClient *tls.Config
	mtlsServer, mtlsClient   *tls.Config
}

// handshakeSection is one more measurement made after the crypto/tls vs
// mtls comparison, with the same credentials and configs — the place for
// the latency a proxy adds per request. run returns what goes under name in
// --json and the lines to print.
type handshakeSection struct {
	name string
	run  func(ctx context.Context, b *handshakeBench) (result any, lines []string, err error)
}

// handshakeSections are the further sections, in the order they run.
func handshakeSections() []handshakeSection {
	return []handshakeSection{proxyLatencySection()}
}

// handshakeCase is one row of the comparison.
type handshakeCase struct {
	Kind       string  `json:"kind"`   // see handshakeKinds
	Config     string  `json:"config"` // crypto/tls or mtls
	Handshakes int     `json:"handshakes"`
	Errors     int     `json:"errors"`
	Resumed    int     `json:"resumed"`
	Seconds    float64 `json:"seconds"`
	PerSecond  float64 `json:"handshakes_per_second"`
	P50Ms      float64 `json:"p50_ms"`
	P99Ms      float64 `json:"p99_ms"`
	FirstError string  `json:"first_error,omitempty"`

	lat []time.Duration
}

// handshakeKinds are the three situations compared:
//   - full: a full handshake by a client the server has seen before (mtls
//     remembers chains that verified; crypto/tls verifies every time);
//   - full-new-peer: a full handshake by a client certificate the server
//     has not seen recently, so mtls verifies the chain (and its own rules)
//     like crypto/tls. The client is the same crypto/tls one for both
//     servers, so only the servers' verification of the client differs;
//   - resumed: a resumed session (crypto/tls only checks the stored chain's
//     dates and root; mtls runs its whole verification again).
var handshakeKinds = []string{"full", "full-new-peer", "resumed"}

// HandshakeResult is what `mica bench handshake` prints.
type HandshakeResult struct {
	KeyType        string             `json:"key_type"`
	Concurrency    int                `json:"concurrency"`
	Rounds         int                `json:"rounds"`
	RevokedSerials int                `json:"revoked_serials"`
	Peers          int                `json:"new_peer_certificates"`
	Cases          []*handshakeCase   `json:"cases"`
	DiffPct        map[string]float64 `json:"difference_percent"` // by kind: mtls vs crypto/tls handshakes/s
	MTLSVerified   map[string]float64 `json:"mtls_verified"`      // mica_mtls_handshakes_total by outcome
	Sections       map[string]any     `json:"sections,omitempty"`
	LoadBefore     string             `json:"load_average_before"`
	LoadAfter      string             `json:"load_average_after"`
	Note           string             `json:"note"`

	slot         time.Duration
	sectionLines []string
}

// HandshakeConfig says what `mica bench handshake` measures.
type HandshakeConfig struct {
	// Concurrency is the handshakes in flight.
	Concurrency int
	// Duration is how long each case is measured, split over Rounds, which
	// alternate crypto/tls and mtls so that drift on a busy machine hits
	// both alike; Warmup is an unmeasured run of every case before.
	Duration time.Duration
	Rounds   int
	Warmup   time.Duration
	// Revoked is the number of serials in the revocation set the mtls
	// configs consult; Peers the distinct client certificates of the
	// full-new-peer case.
	Revoked, Peers int
	// KeyType is the algorithm of the CA's and the certificates' keys.
	KeyType keys.Algorithm
}

// Handshake measures mutual-TLS handshakes per second, crypto/tls against
// the mtls package, for each of handshakeKinds, then the further sections.
func Handshake(ctx context.Context, cfg HandshakeConfig) (*HandshakeResult, error) {
	if cfg.Concurrency < 1 || cfg.Duration <= 0 || cfg.Rounds < 1 || cfg.Revoked < 0 || cfg.Warmup < 0 || cfg.Peers < 1 {
		return nil, fmt.Errorf("bench handshake: concurrency, rounds and peers must be at least 1, duration positive, revoked and warm-up not negative")
	}
	b, err := newHandshakeBench(cfg.KeyType, cfg.Revoked, cfg.Peers)
	if err != nil {
		return nil, err
	}
	b.concurrency, b.rounds, b.slot = cfg.Concurrency, cfg.Rounds, cfg.Duration/time.Duration(cfg.Rounds)

	plainAddr, stopPlain, err := serveHandshakes(b.plainServer)
	if err != nil {
		return nil, err
	}
	defer stopPlain()
	mtlsAddr, stopMTLS, err := serveHandshakes(b.mtlsServer)
	if err != nil {
		return nil, err
	}
	defer stopMTLS()

	res := &HandshakeResult{KeyType: string(cfg.KeyType), Concurrency: cfg.Concurrency, Rounds: cfg.Rounds, RevokedSerials: cfg.Revoked,
		Peers: cfg.Peers, DiffPct: map[string]float64{}, LoadBefore: LoadAverage(), slot: b.slot,
		Note: "client and server in this process on loopback, sharing the CPUs; a handshake is timed from dial to the server's first byte, so the server's verification of the client is inside it"}
	type runner struct {
		c    *handshakeCase
		addr string
		cfg  *tls.Config
	}
	type pair struct{ plain, mtls runner }
	pairs := map[string]pair{}
	for _, kind := range handshakeKinds {
		plainCfg, mtlsCfg, err := b.clientConfigs(kind)
		if err != nil {
			return nil, err
		}
		p := pair{runner{&handshakeCase{Kind: kind, Config: "crypto/tls"}, plainAddr, plainCfg},
			runner{&handshakeCase{Kind: kind, Config: "mtls"}, mtlsAddr, mtlsCfg}}
		pairs[kind] = p
		res.Cases = append(res.Cases, p.plain.c, p.mtls.c)
	}
	run := func(r runner, d time.Duration, record bool) {
		var resumed atomic.Int64
		start := time.Now()
		lat, failed, firstErr := Loop(ctx, cfg.Concurrency, d, func(int, int) error {
			didResume, err := handshakeOnce(r.addr, r.cfg)
			if didResume {
				resumed.Add(1)
			}
			return err
		})
		if !record {
			return
		}
		r.c.Seconds += time.Since(start).Seconds()
		r.c.lat = append(r.c.lat, lat...)
		r.c.Errors += failed
		r.c.Resumed += int(resumed.Load())
		if firstErr != nil && r.c.FirstError == "" {
			r.c.FirstError = firstErr.Error()
		}
	}
	for round := -1; round < cfg.Rounds; round++ {
		for _, kind := range handshakeKinds {
			order := []runner{pairs[kind].plain, pairs[kind].mtls}
			if round%2 != 0 {
				slices.Reverse(order)
			}
			for _, r := range order {
				if round < 0 { // warm-up: session caches filled, code paged in
					run(r, cfg.Warmup/time.Duration(2*len(handshakeKinds)), false)
				} else {
					run(r, b.slot, true)
				}
			}
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	for _, c := range res.Cases {
		slices.Sort(c.lat)
		c.Handshakes = len(c.lat)
		c.PerSecond = float64(len(c.lat)) / c.Seconds
		c.P50Ms, c.P99Ms = Ms(Percentile(c.lat, 0.50)), Ms(Percentile(c.lat, 0.99))
	}
	for kind, p := range pairs {
		res.DiffPct[kind] = (p.mtls.c.PerSecond/p.plain.c.PerSecond - 1) * 100
	}
	if res.MTLSVerified, err = verifiedCounts(b.metrics); err != nil {
		return nil, err
	}

	for _, s := range handshakeSections() {
		out, lines, err := s.run(ctx, b)
		if err != nil {
			return nil, fmt.Errorf("bench handshake: %s: %w", s.name, err)
		}
		if res.Sections == nil {
			res.Sections = map[string]any{}
		}
		res.Sections[s.name] = out
		res.sectionLines = append(res.sectionLines, lines...)
	}
	res.LoadAfter = LoadAverage()
	return res, nil
}

// WriteText prints the result for a reader.
func (res *HandshakeResult) WriteText(w io.Writer) {
	fmt.Fprintf(w, "bench handshake: mutual TLS 1.3, %s keys, concurrency %d, %d rounds of %s per case\n",
		res.KeyType, res.Concurrency, res.Rounds, res.slot)
	fmt.Fprintf(w, "  crypto/tls: ClientCAs + RequireAndVerifyClientCert, RootCAs + host name\n")
	fmt.Fprintf(w, "  mtls:       ServerConfig/ClientConfig on mtls.Verifier (crypto/x509 plus the profile rules of docs/verifier.md), identity authorizers, revocation set of %d serials, metrics\n", res.RevokedSerials)
	fmt.Fprintf(w, "  %-14s %-11s %12s %9s %9s %8s %7s\n", "", "", "handshakes/s", "p50 ms", "p99 ms", "resumed", "errors")
	for i := 0; i+1 < len(res.Cases); i += 2 { // crypto/tls then mtls, kind by kind
		for _, c := range res.Cases[i : i+2] {
			fmt.Fprintf(w, "  %-14s %-11s %12.0f %9.2f %9.2f %7.0f%% %7d\n", c.Kind, c.Config, c.PerSecond, c.P50Ms, c.P99Ms,
				100*float64(c.Resumed)/float64(max(1, c.Handshakes)), c.Errors)
		}
		kind := res.Cases[i].Kind
		fmt.Fprintf(w, "  %-14s mtls vs crypto/tls: %+.1f%% handshakes/s (target: within 5%%)\n", kind, res.DiffPct[kind])
	}
	fmt.Fprintf(w, "  mtls verified %.0f handshakes (both sides), refused %.0f\n", res.MTLSVerified["accepted"], res.MTLSVerified["rejected"])
	for _, c := range res.Cases {
		if c.FirstError != "" {
			fmt.Fprintf(w, "  first error (%s, %s): %s\n", c.Kind, c.Config, c.FirstError)
		}
	}
	for _, l := range res.sectionLines {
		fmt.Fprintln(w, l)
	}
	fmt.Fprintf(w, "load average: %s before, %s after (a shared machine: figures are noisy)\n", res.LoadBefore, res.LoadAfter)
	fmt.Fprintln(w, res.Note)
}

// clientConfigs returns the crypto/tls and mtls client configs of one
// kind of handshake. Both name the server by its DNS name (crypto/tls
// checks it; mtls checks the SPIFFE ID instead).
func (b *handshakeBench) clientConfigs(kind string) (plain, mt *tls.Config, err error) {
	plain = b.plainClient.Clone()
	mt = b.mtlsClient.Clone()
	if kind == "full-new-peer" {
		plain.Certificates, plain.GetClientCertificate = nil, b.nextPeer
		mt = plain.Clone()
	}
	for _, c := range []*tls.Config{plain, mt} {
		c.ServerName = b.serverName
		c.ClientSessionCache = nil
		if kind == "resumed" {
			c.ClientSessionCache = tls.NewLRUClientSessionCache(4 * b.concurrency)
		}
	}
	return plain, mt, nil
}

// nextPeer hands out the new-peer certificates in turn.
func (b *handshakeBench) nextPeer(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return &b.peers[b.peerNext.Add(1)%uint64(len(b.peers))], nil
}

// newHandshakeBench makes a CA in memory, a server and a client credential,
// the revocation set and both pairs of configs.
func newHandshakeBench(alg keys.Algorithm, nRevoked, nPeers int) (*handshakeBench, error) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	rootKey, err := keys.Generate(alg, rand.Reader)
	if err != nil {
		return nil, err
	}
	root, err := ca.NewRoot(rootKey, ca.RootConfig{TrustDomain: td})
	if err != nil {
		return nil, err
	}
	intKey, err := keys.Generate(alg, rand.Reader)
	if err != nil {
		return nil, err
	}
	icfg := ca.IntermediateConfig{TrustDomain: td}
	csrDER, err := ca.NewIntermediateCSR(intKey, icfg)
	if err != nil {
		return nil, err
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, err
	}
	inter, err := ca.SignIntermediate(root, rootKey, csr, icfg)
	if err != nil {
		return nil, err
	}
	iss, err := issuance.New(issuance.Config{Cert: inter, Signer: intKey})
	if err != nil {
		return nil, err
	}
	b := &handshakeBench{root: root, intermediate: inter, serverName: "api.bench.example.org",
		serverID: "spiffe://example.org/bench/api", metrics: prometheus.NewRegistry()}
	issue := func(names string, eku x509.ExtKeyUsage) (tls.Certificate, error) {
		id, err := identity.Parse(names)
		if err != nil {
			return tls.Certificate{}, err
		}
		key, err := keys.Generate(alg, rand.Reader)
		if err != nil {
			return tls.Certificate{}, err
		}
		now := time.Now()
		cert, err := iss.Issue(issuance.Request{PublicKey: key.Public(), Identity: id, NotBefore: now.Add(-time.Minute),
			NotAfter: now.Add(24 * time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{eku}})
		if err != nil {
			return tls.Certificate{}, err
		}
		return tls.Certificate{Certificate: [][]byte{cert.Raw, inter.Raw}, PrivateKey: key, Leaf: cert}, nil
	}
	if b.server, err = issue(b.serverID+","+b.serverName, x509.ExtKeyUsageServerAuth); err != nil {
		return nil, err
	}
	if b.client, err = issue("spiffe://example.org/bench/client", x509.ExtKeyUsageClientAuth); err != nil {
		return nil, err
	}

	pool := x509.NewCertPool()
	pool.AddCert(root)
	b.plainServer = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{b.server},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	b.plainClient = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{b.client}, RootCAs: pool}

	b.revoked = &revocation.Set{}
	snap := revocation.Snapshot{Seq: int64(nRevoked)}
	for range nRevoked {
		sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
		if err != nil {
			return nil, err
		}
		snap.Revoked = append(snap.Revoked, revocation.Event{Kind: revocation.KindRevoked, Serial: sn.Text(16)})
	}
	b.revoked.Reset(snap)
	metrics, err := mtlsprom.New(b.metrics)
	if err != nil {
		return nil, err
	}
	roots := []*x509.Certificate{root}
	opts := func(cert tls.Certificate, allow mtls.Authorizer) mtls.Options {
		return mtls.Options{Source: staticSource{cert: &cert, roots: roots}, Authorize: allow, Revocations: b.revoked, Metrics: metrics}
	}
	if b.mtlsServer, err = mtls.ServerConfig(opts(b.server, mtls.AuthorizePathPrefixes("spiffe://example.org/bench/"))); err != nil {
		return nil, err
	}
	if b.mtlsClient, err = mtls.ClientConfig(opts(b.client, mtls.AuthorizeIDs(b.serverID))); err != nil {
		return nil, err
	}
	if b.peers, err = sameKeyCertificates(b.client, inter, intKey, nPeers); err != nil {
		return nil, err
	}
	return b, nil
}

// sameKeyCertificates signs n copies of base's certificate with fresh
// serial numbers: as many distinct peers as wanted, for the price of a
// signature each rather than a key and a full issuance each.
func sameKeyCertificates(base tls.Certificate, issuer *x509.Certificate, issuerKey crypto.Signer, n int) ([]tls.Certificate, error) {
	out := make([]tls.Certificate, n)
	tmpl := *base.Leaf
	pub := base.Leaf.PublicKey
	for i := range out {
		sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
		if err != nil {
			return nil, err
		}
		tmpl.SerialNumber = sn
		der, err := x509.CreateCertificate(rand.Reader, &tmpl, issuer, pub, issuerKey)
		if err != nil {
			return nil, fmt.Errorf("bench handshake: signing peer certificates: %w", err)
		}
		leaf, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		out[i] = tls.Certificate{Certificate: [][]byte{der, issuer.Raw}, PrivateKey: base.PrivateKey, Leaf: leaf}
	}
	return out, nil
}

// staticSource is an mtls.Source that never changes: in the benchmark the
// credentials are the same for both configs and are not reloaded.
type staticSource struct {
	cert  *tls.Certificate
	roots []*x509.Certificate
}

func (s staticSource) Certificate() (*tls.Certificate, error) { return s.cert, nil }
func (s staticSource) Roots() []*x509.Certificate             { return s.roots }

// serveHandshakes accepts connections on loopback, completes the handshake
// and writes one byte, so the client knows the server accepted it.
func serveHandshakes(cfg *tls.Config) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				tc := tls.Server(c, cfg)
				if tc.Handshake() == nil {
					tc.Write([]byte{1})
				}
			})
		}
	})
	return ln.Addr().String(), func() { ln.Close(); wg.Wait() }, nil
}

// handshakeOnce dials, shakes hands and waits for the server's byte: in
// TLS 1.3 the client's Handshake returns before the server has verified
// the client, and the byte comes only after. Reading it also takes in the
// server's session tickets.
func handshakeOnce(addr string, cfg *tls.Config) (resumed bool, err error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return false, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		return false, err
	}
	var b [1]byte
	if _, err := io.ReadFull(tc, b[:]); err != nil {
		return false, fmt.Errorf("the server refused the handshake: %w", err)
	}
	return tc.ConnectionState().DidResume, nil
}

// verifiedCounts sums mica_mtls_handshakes_total by outcome: proof that
// the mtls cases went through the package's verification, resumed ones
// included.
func verifiedCounts(reg *prometheus.Registry) (map[string]float64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	out := map[string]float64{"accepted": 0, "rejected": 0}
	for _, mf := range mfs {
		if mf.GetName() != "mica_mtls_handshakes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" {
					out[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out, nil
}
