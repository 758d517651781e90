package discover

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/discover/discovertest"
	"github.com/mica-pki/mica/internal/testpki"
)

var now = time.Now()

func TestAnalyze(t *testing.T) {
	mica := testpki.New(t, "example.org", testpki.WithClock(func() time.Time { return now }))
	dnsID, err := identity.Parse("web.svc.example.org")
	if err != nil {
		t.Fatal(err)
	}
	micaWeb := mica.Leaf(t, dnsID, testpki.WithTTL(24*time.Hour))
	micaSPIFFE := mica.Leaf(t, mica.ID(t, "/billing/api"))

	otherRoot := discovertest.Issue(t, nil, discovertest.Spec{CN: "Other Root", IsCA: true})
	otherInter := discovertest.Issue(t, otherRoot, discovertest.Spec{CN: "Other Intermediate", IsCA: true})
	otherLeaf := discovertest.Issue(t, otherInter, discovertest.Spec{CN: "app.other.test", DNS: []string{"app.other.test"}})
	selfSigned := discovertest.Issue(t, nil, discovertest.Spec{CN: "forgotten", DNS: []string{"forgotten.test"}})
	expired := discovertest.Issue(t, otherInter, discovertest.Spec{CN: "old.other.test", DNS: []string{"old.other.test"},
		NotBefore: now.Add(-60 * 24 * time.Hour), NotAfter: now.Add(-24 * time.Hour)})
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weak := discovertest.Issue(t, otherInter, discovertest.Spec{CN: "weak.other.test", DNS: []string{"weak.other.test"}, Key: rsa1024})
	oldInter := discovertest.Issue(t, otherRoot, discovertest.Spec{CN: "Expired Intermediate", IsCA: true,
		NotBefore: now.Add(-60 * 24 * time.Hour), NotAfter: now.Add(-time.Hour)})
	underOld := discovertest.Issue(t, oldInter, discovertest.Spec{CN: "b.other.test", DNS: []string{"b.other.test"}})

	a := NewAnalyzer(AnalyzerConfig{Roots: []*x509.Certificate{otherRoot.Cert}, Mica: []*x509.Certificate{mica.Root, mica.Intermediate},
		Clock: func() time.Time { return now }})
	endpoint := func(host string, port int, sni string) Location {
		return Location{Scheme: SchemeTLS, Host: host, Port: port, ServerName: sni}
	}
	file := func(p string) Location { return Location{Scheme: SchemeFile, Host: "host1", Path: p} }
	host1 := []identity.Name{mustName(t, "host1"), mustName(t, "10.0.0.5")}

	tests := []struct {
		name      string
		s         Sighting
		class     Class
		cert      []Finding
		here      []Finding
		detailHas string
	}{
		{"mica leaf with its chain, asked by its name", Sighting{Location: endpoint("127.0.0.1", 443, "web.svc.example.org"),
			Chain: []*x509.Certificate{micaWeb.Cert, mica.Intermediate}, Addr: netip.MustParseAddr("127.0.0.1"), TLSVersion: tls.VersionTLS13},
			ClassMica, nil, nil, ""},
		{"mica leaf without its intermediate", Sighting{Location: endpoint("web.svc.example.org", 443, ""),
			Chain: []*x509.Certificate{micaWeb.Cert}},
			ClassMica, nil, []Finding{MissingIntermediate}, "neither presented"},
		{"mica leaf served under another name", Sighting{Location: endpoint("10.9.9.9", 8443, "db.svc.example.org"),
			Chain: []*x509.Certificate{micaWeb.Cert, mica.Intermediate}, Addr: netip.MustParseAddr("10.9.9.9")},
			ClassMica, nil, []Finding{NameMismatch, MicaMisplaced}, "does not name"},
		{"mica SPIFFE leaf: no host name to match", Sighting{Location: endpoint("10.9.9.9", 8443, ""),
			Chain: []*x509.Certificate{micaSPIFFE.Cert, mica.Intermediate}},
			ClassMica, nil, nil, ""},
		{"external leaf with its chain", Sighting{Location: endpoint("app.other.test", 443, ""),
			Chain: []*x509.Certificate{otherLeaf.Cert, otherInter.Cert}},
			ClassExternal, nil, nil, ""},
		{"external leaf, root presented too", Sighting{Location: endpoint("app.other.test", 443, ""),
			Chain: []*x509.Certificate{otherLeaf.Cert, otherInter.Cert, otherRoot.Cert}},
			ClassExternal, nil, nil, ""},
		{"external leaf without intermediate", Sighting{Location: endpoint("app.other.test", 443, ""),
			Chain: []*x509.Certificate{otherLeaf.Cert}},
			ClassExternal, nil, []Finding{MissingIntermediate}, "Other Intermediate"},
		{"self-signed", Sighting{Location: endpoint("forgotten.test", 443, ""), Chain: []*x509.Certificate{selfSigned.Cert}, TLSVersion: tls.VersionTLS11},
			ClassSelfSigned, []Finding{SelfSigned}, []Finding{OldTLS}, "TLS 1.1"},
		{"expired", Sighting{Location: endpoint("old.other.test", 443, ""), Chain: []*x509.Certificate{expired.Cert, otherInter.Cert}},
			ClassExternal, []Finding{Expired}, nil, ""},
		{"weak key", Sighting{Location: endpoint("weak.other.test", 443, ""), Chain: []*x509.Certificate{weak.Cert, otherInter.Cert}},
			ClassExternal, []Finding{WeakKey}, nil, "RSA-1024"},
		{"expired intermediate", Sighting{Location: endpoint("b.other.test", 443, ""), Chain: []*x509.Certificate{underOld.Cert, oldInter.Cert}},
			ClassExternal, nil, []Finding{ChainExpired}, "Expired Intermediate"},
		{"name mismatch by address", Sighting{Location: endpoint("192.0.2.7", 443, ""), Chain: []*x509.Certificate{otherLeaf.Cert, otherInter.Cert}},
			ClassExternal, nil, []Finding{NameMismatch}, "asked for 192.0.2.7"},
		{"mica file on a host it names", Sighting{Location: file("/etc/tls/web.pem"), Chain: []*x509.Certificate{micaWeb.Cert},
			HostNames: []identity.Name{mustName(t, "web.svc.example.org")}},
			ClassMica, nil, nil, ""},
		{"mica file on another host, key readable by all", Sighting{Location: file("/etc/tls/web.pem"), Chain: []*x509.Certificate{micaWeb.Cert},
			HostNames: host1, Key: &Key{Path: "/etc/tls/web.key", WorldReadable: true}},
			ClassMica, nil, []Finding{MicaMisplaced, KeyWorldReadable}, "/etc/tls/web.key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := a.Analyze(tc.s)
			if err != nil {
				t.Fatal(err)
			}
			if got.Class != tc.class {
				t.Errorf("class %s, want %s", got.Class, tc.class)
			}
			if !sameFindings(got.Certificate, tc.cert) || !sameFindings(got.Here, tc.here) {
				t.Errorf("findings %v / %v, want %v / %v (details %q)", got.Certificate, got.Here, tc.cert, tc.here, got.Details)
			}
			if tc.detailHas != "" && !strings.Contains(strings.Join(got.Details, "; "), tc.detailHas) {
				t.Errorf("details %q do not mention %q", got.Details, tc.detailHas)
			}
		})
	}
	if _, err := a.Analyze(Sighting{Location: endpoint("x", 1, "")}); err == nil {
		t.Error("a sighting without a certificate was analyzed")
	}
}

// TestWeakSignature: a SHA-1 chain, which Go no longer verifies, is still
// followed to its root and flagged.
func TestWeakSignature(t *testing.T) {
	rootKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	root := discovertest.Issue(t, nil, discovertest.Spec{CN: "SHA1 Root", IsCA: true, Key: rootKey, SigAlg: x509.SHA1WithRSA})
	leaf := discovertest.Issue(t, root, discovertest.Spec{CN: "sha1.test", DNS: []string{"sha1.test"}, SigAlg: x509.SHA1WithRSA})
	a := NewAnalyzer(AnalyzerConfig{Roots: []*x509.Certificate{root.Cert}, Clock: func() time.Time { return now }})
	got, err := a.Analyze(Sighting{Location: Location{Scheme: SchemeTLS, Host: "sha1.test", Port: 443}, Chain: []*x509.Certificate{leaf.Cert}})
	if err != nil {
		t.Fatal(err)
	}
	if !sameFindings(got.Certificate, []Finding{WeakSignature}) || len(got.Here) != 0 {
		t.Errorf("findings %v / %v, want weak-signature alone (the chain reaches its root)", got.Certificate, got.Here)
	}
}

func sameFindings(got, want []Finding) bool {
	g, w := slices.Clone(got), slices.Clone(want)
	slices.Sort(g)
	slices.Sort(w)
	return slices.Equal(g, w)
}

func mustName(t *testing.T, s string) identity.Name {
	t.Helper()
	n, err := identity.ParseName(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestLocation(t *testing.T) {
	good := []Location{
		{Scheme: SchemeTLS, Host: "127.0.0.1", Port: 443},
		{Scheme: SchemeTLS, Host: "::1", Port: 8443, ServerName: "web.example.org"},
		{Scheme: SchemeSMTP, Host: "mail.example.org", Port: 25},
		{Scheme: SchemePostgres, Host: "db", Port: 5432},
		{Scheme: SchemeFile, Host: "host1", Path: "/etc/ssl/my cert.pem"},
		{Scheme: SchemeFile, Host: "host1", Path: "/etc/keystore.p12", Entry: "server alias"},
	}
	for _, l := range good {
		s := l.String()
		back, err := ParseLocation(s)
		if err != nil || back != l {
			t.Errorf("%+v → %q → %+v, %v", l, s, back, err)
		}
	}
	if s := (Location{Scheme: SchemeTLS, Host: "a.test", Port: 443, ServerName: "a.test"}).String(); s != "tls://a.test:443" {
		t.Errorf("SNI equal to the host is left out: got %q", s)
	}
	for _, bad := range []string{
		"", "http://x:80", "tls://x", "tls://x:0", "tls://x:70000", "tls://x:443/path", "tls://x:443?foo=1",
		"file://host/rel/../x", "file:///no-host", "file://host/x?y=1", "tls://a%20b:443", "TLS://x:443",
		"tls://x:0443", "file://host/a//b",
	} {
		if l, err := ParseLocation(bad); err == nil {
			t.Errorf("ParseLocation(%q) = %+v, want an error", bad, l)
		}
	}
	l := Location{Scheme: SchemeFile, Host: "h", Path: "/etc/ssl/a.pem"}
	for dir, want := range map[string]bool{"/etc": true, "/etc/ssl/": true, "/": true, "/etc/ss": false, "/etc/ssl/a.pem": true} {
		if got := l.Under("h", dir); got != want {
			t.Errorf("%s under %s: %v, want %v", l, dir, got, want)
		}
	}
	if l.Under("other", "/") {
		t.Error("a file on h is under a directory of another host")
	}
}

func TestOwners(t *testing.T) {
	mica := testpki.New(t, "example.org")
	spiffeLeaf := mica.Leaf(t, mica.ID(t, "/billing/api"))
	dnsID, _ := identity.Parse("web.svc.example.org,10.1.2.3")
	dnsLeaf := mica.Leaf(t, dnsID)
	trick, _ := identity.Parse("billing.svc.example.org")
	trickLeaf := mica.Leaf(t, trick) // a DNS name that reads like a SPIFFE path must not match a SPIFFE rule

	o, err := CompileOwners([]OwnerRule{
		{Owner: "billing", Names: []string{"spiffe://example.org/billing/"}},
		{Owner: "net", Names: []string{"10.1.0.0/16"}, Paths: []string{"/etc/net"}},
		{Owner: "web", Names: []string{"*.svc.example.org"}, Hosts: []string{"192.0.2.0/24"}},
		{Owner: "self", Issuers: []string{"self-signed"}},
		{Owner: "files", Paths: []string{"/srv"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ep := Location{Scheme: SchemeTLS, Host: "192.0.2.10", Port: 443}
	tests := []struct {
		name string
		s    Sighting
		want string
	}{
		{"SPIFFE prefix", Sighting{Location: ep, Chain: []*x509.Certificate{spiffeLeaf.Cert}}, "billing"},
		{"IP network and path", Sighting{Location: Location{Scheme: SchemeFile, Host: "h", Path: "/etc/net/a.pem"}, Chain: []*x509.Certificate{dnsLeaf.Cert}}, "net"},
		{"IP network, path elsewhere falls to the next rule", Sighting{Location: ep, Chain: []*x509.Certificate{dnsLeaf.Cert}}, "web"},
		{"DNS wildcard but host outside", Sighting{Location: Location{Scheme: SchemeTLS, Host: "198.51.100.1", Port: 443}, Chain: []*x509.Certificate{trickLeaf.Cert}}, ""},
		{"path", Sighting{Location: Location{Scheme: SchemeFile, Host: "h", Path: "/srv/x/y.pem"}, Chain: []*x509.Certificate{trickLeaf.Cert}}, "files"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := o.Owner(tc.s, ClassMica); got != tc.want {
				t.Errorf("owner %q, want %q", got, tc.want)
			}
		})
	}
	if got := o.Owner(Sighting{Location: ep, Chain: []*x509.Certificate{trickLeaf.Cert}}, ClassSelfSigned); got != "web" {
		t.Errorf("rules are tried in order: got %q, want web", got)
	}
	for _, bad := range [][]OwnerRule{
		{{Names: []string{"x.test"}}},
		{{Owner: "a", Names: []string{"10.0.0.0/33"}}},
		{{Owner: "a", Names: []string{"xn--a.test"}}},
		{{Owner: "a", Paths: []string{"relative"}}},
	} {
		if _, err := CompileOwners(bad); err == nil {
			t.Errorf("CompileOwners(%+v) accepted", bad)
		}
	}
}
