package tlsscan

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mica-pki/mica/internal/discover"
	"github.com/mica-pki/mica/internal/discover/discovertest"
	"github.com/mica-pki/mica/internal/testaddr"
)

func TestSpec(t *testing.T) {
	s := Spec{Hosts: []string{"127.0.0.1", "# a comment", "db.example.org:5432", "10.0.0.0/30", "[::1]:25"},
		Ports: []int{443, 25}, ServerNames: []string{"web.example.org"}}
	n, err := s.Count()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for tg := range s.Targets() {
		got = append(got, tg.Location().String())
	}
	// 127.0.0.1 and 10.0.0.1-2 on two ports, db and ::1 on one, each
	// without and with the extra server name.
	if n != len(got) || n != (3*2+2)*2 {
		t.Fatalf("Count %d, Targets %d: %q", n, len(got), got)
	}
	for _, want := range []string{"tls://127.0.0.1:443", "smtp://127.0.0.1:25?sni=web.example.org", "postgres://db.example.org:5432",
		"tls://10.0.0.2:443", "smtp://[::1]:25"} {
		if !slices.Contains(got, want) {
			t.Errorf("targets lack %s: %q", want, got)
		}
	}
	for _, unwanted := range []string{"tls://10.0.0.0:443", "tls://10.0.0.3:443"} {
		if slices.Contains(got, unwanted) {
			t.Errorf("targets hold %s, the network or broadcast address", unwanted)
		}
	}
	for _, bad := range []Spec{
		{Hosts: []string{"10.0.0.0/8"}, Ports: []int{443}},
		{Hosts: []string{"10.0.0.0/12"}, Ports: []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17}},
		{Hosts: []string{"a.example"}},
		{Hosts: []string{"a..example"}, Ports: []int{443}},
		{Hosts: []string{"a.example:0"}},
		{Hosts: []string{"a.example"}, Ports: []int{70000}},
		{Hosts: []string{"a.example"}, Ports: []int{443}, ServerNames: []string{"10.0.0.1"}},
	} {
		if n, err := bad.Count(); err == nil {
			t.Errorf("Count(%+v) = %d, want an error", bad, n)
		}
	}
	ports, err := ParsePorts("8443, 443,9000-9002,443")
	if err != nil || !slices.Equal(ports, []int{443, 8443, 9000, 9001, 9002}) {
		t.Errorf("ParsePorts: %v %v", ports, err)
	}
	for _, bad := range []string{"0", "65536", "9-1", "x", "1-x"} {
		if _, err := ParsePorts(bad); err == nil {
			t.Errorf("ParsePorts(%q) accepted", bad)
		}
	}
	st, err := ParseStartTLS("2525=smtp,1143=imap")
	if err != nil || st[2525] != discover.SchemeSMTP || st[1143] != discover.SchemeIMAP {
		t.Errorf("ParseStartTLS: %v %v", st, err)
	}
	if _, err := ParseStartTLS("25=pop3"); err == nil {
		t.Error("ParseStartTLS accepted pop3")
	}
}

// pki is a small CA that is not mica, and the certificates the tests serve.
type pki struct {
	root, inter, leaf, selfSigned *discovertest.Cert
}

func newPKI(t *testing.T) pki {
	root := discovertest.Issue(t, nil, discovertest.Spec{CN: "Test Root", IsCA: true})
	inter := discovertest.Issue(t, root, discovertest.Spec{CN: "Test Intermediate", IsCA: true})
	return pki{
		root: root, inter: inter,
		leaf:       discovertest.Issue(t, inter, discovertest.Spec{CN: "web.test", DNS: []string{"web.test"}}),
		selfSigned: discovertest.Issue(t, nil, discovertest.Spec{CN: "self.test", DNS: []string{"self.test"}}),
	}
}

func scanAll(t *testing.T, cfg Config, targets ...Target) map[string]Result {
	t.Helper()
	out := map[string]Result{}
	err := Scan(context.Background(), cfg, slices.Values(targets), func(r Result) error {
		out[r.Target.Location().String()] = r
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(targets) {
		t.Fatalf("%d results for %d targets", len(out), len(targets))
	}
	return out
}

func target(addr net.Addr, sni string) Target {
	ap := addr.(*net.TCPAddr)
	return Target{Host: ap.IP.String(), Port: ap.Port, ServerName: sni, Scheme: discover.SchemeTLS}
}

// listen takes a loopback port and hands each connection to serve.
func listen(t *testing.T, addr string, serve func(net.Conn)) net.Addr {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				serve(c)
			}()
		}
	}()
	return ln.Addr()
}

func TestScanEndpoints(t *testing.T) {
	p := newPKI(t)
	chained := discovertest.Serve(t, "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{p.leaf.TLS(p.inter.Cert)}})
	// One address, a certificate per name.
	bySNI := discovertest.Serve(t, "127.0.0.2:0", &tls.Config{GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		c := p.selfSigned.TLS()
		if h.ServerName == "web.test" {
			c = p.leaf.TLS()
		}
		return &c, nil
	}})
	// A server that demands a client certificate still shows its own.
	pool := x509.NewCertPool()
	pool.AddCert(p.root.Cert)
	mutual := discovertest.Serve(t, "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{p.leaf.TLS(p.inter.Cert)},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool, MaxVersion: tls.VersionTLS12})
	old := discovertest.Serve(t, "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{p.selfSigned.TLS()},
		MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10})
	plain := listen(t, "127.0.0.1:0", func(c net.Conn) { fmt.Fprintf(c, "HTTP/1.0 400 Bad Request\r\n\r\n") })
	silent := listen(t, "127.0.0.1:0", func(c net.Conn) { io.Copy(io.Discard, c) })
	// Nothing listens there, and no socket is given the port by the
	// kernel (a port closed and handed on could be).
	closed := net.TCPAddrFromAddrPort(testaddr.New(t))

	res := scanAll(t, Config{Timeout: 2 * time.Second, Concurrency: 4},
		target(chained, ""), target(bySNI, ""), target(bySNI, "web.test"), target(mutual, ""), target(old, ""),
		target(plain, ""), target(silent, ""), target(closed, ""))
	check := func(addr net.Addr, sni string, outcome Outcome, chain ...*x509.Certificate) Result {
		t.Helper()
		r := res[target(addr, sni).Location().String()]
		if r.Outcome != outcome {
			t.Errorf("%s: outcome %s (%v), want %s", r.Target.Location(), r.Outcome, r.Err, outcome)
		}
		if !slices.EqualFunc(r.Chain, chain, func(a, b *x509.Certificate) bool { return a.Equal(b) }) {
			t.Errorf("%s: chain of %d certificates, want %d", r.Target.Location(), len(r.Chain), len(chain))
		}
		if outcome.Definite() != (outcome != OutcomeTimeout && outcome != OutcomeError) {
			t.Errorf("%s is definite: %v", outcome, outcome.Definite())
		}
		return r
	}
	if r := check(chained, "", OutcomeTLS, p.leaf.Cert, p.inter.Cert); r.TLSVersion != tls.VersionTLS13 || r.Addr.String() != "127.0.0.1" {
		t.Errorf("chained: version %x, address %s", r.TLSVersion, r.Addr)
	}
	check(bySNI, "", OutcomeTLS, p.selfSigned.Cert)
	check(bySNI, "web.test", OutcomeTLS, p.leaf.Cert)
	check(mutual, "", OutcomeTLS, p.leaf.Cert, p.inter.Cert)
	if r := check(old, "", OutcomeTLS, p.selfSigned.Cert); r.TLSVersion != tls.VersionTLS10 {
		t.Errorf("old server: version %x, want TLS 1.0", r.TLSVersion)
	}
	check(plain, "", OutcomeNoCertificate)
	check(silent, "", OutcomeTimeout)
	check(closed, "", OutcomeClosed)
}

// smtpServer speaks enough SMTP to offer STARTTLS (or not) and then TLS.
func smtpServer(t *testing.T, cert tls.Certificate, offer bool) net.Addr {
	return listen(t, "127.0.0.1:0", func(c net.Conn) {
		br := bufio.NewReader(c)
		fmt.Fprintf(c, "220-mail.test ESMTP\r\n220 ready\r\n")
		if line, _ := br.ReadString('\n'); !strings.HasPrefix(line, "EHLO ") {
			fmt.Fprintf(c, "503 EHLO first\r\n")
			return
		}
		fmt.Fprintf(c, "250-mail.test\r\n250-PIPELINING\r\n")
		if offer {
			fmt.Fprintf(c, "250-STARTTLS\r\n")
		}
		fmt.Fprintf(c, "250 8BITMIME\r\n")
		if line, _ := br.ReadString('\n'); line != "STARTTLS\r\n" {
			fmt.Fprintf(c, "500 unknown\r\n")
			return
		}
		fmt.Fprintf(c, "220 go ahead\r\n")
		tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}}).Handshake()
	})
}

func imapServer(t *testing.T, cert tls.Certificate) net.Addr {
	return listen(t, "127.0.0.1:0", func(c net.Conn) {
		br := bufio.NewReader(c)
		fmt.Fprintf(c, "* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n")
		line, _ := br.ReadString('\n')
		tag, cmd, _ := strings.Cut(strings.TrimSpace(line), " ")
		if !strings.EqualFold(cmd, "STARTTLS") {
			fmt.Fprintf(c, "%s BAD\r\n", tag)
			return
		}
		fmt.Fprintf(c, "* NOTE ignore this\r\n%s OK Begin TLS negotiation now\r\n", tag)
		tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}}).Handshake()
	})
}

func TestStartTLS(t *testing.T) {
	p := newPKI(t)
	at := func(addr net.Addr, scheme discover.Scheme) Target {
		tg := target(addr, "")
		tg.Scheme = scheme
		return tg
	}
	// check scans the targets and wants each outcome, in order.
	check := func(t *testing.T, targets []Target, wants ...Outcome) {
		t.Helper()
		res := scanAll(t, Config{Timeout: 5 * time.Second}, targets...)
		for i, want := range wants {
			r := res[targets[i].Location().String()]
			if r.Outcome != want {
				t.Errorf("%s: %s (%v), want %s", targets[i].Location(), r.Outcome, r.Err, want)
				continue
			}
			if want == OutcomeTLS && (len(r.Chain) != 2 || !r.Chain[0].Equal(p.leaf.Cert)) {
				t.Errorf("%s: chain of %d, want the leaf and its intermediate", targets[i].Location(), len(r.Chain))
			}
		}
	}
	smtp := smtpServer(t, p.leaf.TLS(p.inter.Cert), true)
	smtpNoTLS := smtpServer(t, p.leaf.TLS(), false)
	imap := imapServer(t, p.leaf.TLS(p.inter.Cert))
	check(t, []Target{at(smtp, discover.SchemeSMTP), at(smtpNoTLS, discover.SchemeSMTP), at(imap, discover.SchemeIMAP), at(smtp, discover.SchemeIMAP)},
		OutcomeTLS, OutcomeNoCertificate, OutcomeTLS, OutcomeNoCertificate)
	t.Run("Postgres", func(t *testing.T) {
		pg := startPostgres(t, p.leaf, p.inter) // a real PostgreSQL with TLS on
		check(t, []Target{at(pg, discover.SchemePostgres)}, OutcomeTLS)
	})
}

// TestLoopbackNetwork scans a /24 of loopback addresses on three ports,
// with servers on a few of them, and prints how long it took.
func TestLoopbackNetwork(t *testing.T) {
	if testing.Short() {
		t.Skip("scans 762 loopback endpoints")
	}
	p := newPKI(t)
	const network = "127.0.51.0/24"
	var ports []int
	servers := map[string]bool{}
	for _, host := range []string{"127.0.51.10", "127.0.51.77", "127.0.51.200"} {
		addr := discovertest.Serve(t, host+":0", &tls.Config{Certificates: []tls.Certificate{p.leaf.TLS(p.inter.Cert)}})
		servers[target(addr, "").Location().String()] = true
		ports = append(ports, addr.(*net.TCPAddr).Port)
	}
	spec := Spec{Hosts: []string{network}, Ports: ports}
	n, err := spec.Count()
	if err != nil {
		t.Fatal(err)
	}
	outcomes := map[Outcome]int{}
	start := time.Now()
	err = Scan(context.Background(), Config{Concurrency: 128, Timeout: 3 * time.Second}, spec.Targets(), func(r Result) error {
		outcomes[r.Outcome]++
		if r.Outcome == OutcomeTLS && !servers[r.Target.Location().String()] {
			return fmt.Errorf("a certificate at %s, where no test server listens", r.Target.Location())
		}
		return nil
	})
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if outcomes[OutcomeTLS] != len(servers) {
		t.Errorf("outcomes %v, want %d certificates", outcomes, len(servers))
	}
	t.Logf("scanned %s on %d ports (%d endpoints) in %s: %v (concurrency 128; a shared 2-core machine, so the figure is noisy)",
		network, len(ports), n, elapsed.Round(time.Millisecond), outcomes)
}

func TestScanStops(t *testing.T) {
	p := newPKI(t)
	addr := discovertest.Serve(t, "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{p.leaf.TLS()}})
	targets := []Target{target(addr, ""), target(addr, "a.test"), target(addr, "b.test"), target(addr, "c.test")}
	// Resumption: skipped targets are not probed.
	var got []string
	err := Scan(context.Background(), Config{Concurrency: 1, Skip: func(tg Target) bool { return tg.ServerName == "a.test" }},
		slices.Values(targets), func(r Result) error {
			got = append(got, r.Target.ServerName)
			return nil
		})
	if err != nil || slices.Contains(got, "a.test") || len(got) != 3 {
		t.Errorf("with a.test skipped: %q, %v", got, err)
	}
	// An error from fn ends the scan and is returned.
	stop := errors.New("enough")
	calls := 0
	err = Scan(context.Background(), Config{Concurrency: 1}, slices.Values(targets), func(Result) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("Scan returned %v after %d calls, want the callback's error after one", err, calls)
	}
	// A cancelled context ends it too.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Scan(ctx, Config{}, slices.Values(targets), func(Result) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("Scan with a cancelled context: %v", err)
	}
}

// TestPacer: at a rate of 50 per second, 100 connections take two
// seconds of the (fake) clock.
func TestPacer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := pacer{rate: 50}
		start := time.Now()
		for range 101 {
			if err := p.wait(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		if got := time.Since(start); got != 2*time.Second {
			t.Errorf("101 waits at 50/s took %s, want 2s", got)
		}
	})
}
