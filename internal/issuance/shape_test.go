package issuance_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/x509"
	"errors"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"

	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/testpki"
)

// TestLintOncePerShape checks that zlint runs on the first leaf of each
// shape and not on later ones whose values are plain, and that a defect
// is refused all the same once the shape is known: a structural one
// changes the shape, a defective name is not plain.
func TestLintOncePerShape(t *testing.T) {
	p := testpki.New(t, "example.org")
	iss := p.Issuer
	id := "spiffe://example.org/web,web.example.org"
	good := func(t *testing.T, path string) {
		t.Helper()
		issuance.SetTemplateHook(iss, nil)
		if _, err := iss.Issue(request(t, newKey(t, keys.ECDSAP256).Public(), mustIdentity(t, "spiffe://example.org/"+path+",web.example.org"))); err != nil {
			t.Fatal(err)
		}
	}
	before := issuance.FullLints(iss)
	good(t, "web")
	if n := issuance.FullLints(iss) - before; n != 1 {
		t.Fatalf("first leaf of its shape: zlint ran %d times, want 1", n)
	}
	good(t, "ns/prod/sa/api")
	good(t, "other")
	if n := issuance.FullLints(iss) - before; n != 1 {
		t.Fatalf("two more leaves of the same shape: zlint ran %d times in all, want 1", n)
	}
	if _, err := iss.Issue(request(t, newKey(t, keys.ECDSAP384).Public(), mustIdentity(t, id))); err != nil {
		t.Fatal(err)
	}
	if n := issuance.FullLints(iss) - before; n != 2 {
		t.Fatalf("a P-384 key is another shape: zlint ran %d times in all, want 2", n)
	}

	defects := []struct {
		name string
		hook func(*x509.Certificate)
		lint string
	}{
		{"certSign on a leaf", func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageCertSign }, "e_ext_key_usage_cert_sign_without_ca"},
		{"no key identifier", func(c *x509.Certificate) { c.SubjectKeyId = []byte{} }, "w_ext_subject_key_identifier_missing_sub_cert"},
		{"underscore in a DNS label", func(c *x509.Certificate) { c.DNSNames = []string{"web_1.example.org"} }, "w_rfc_dnsname_underscore_in_trd"},
		{"empty DNS label", func(c *x509.Certificate) { c.DNSNames = []string{"web..example.org"} }, "e_rfc_dnsname_empty_label"},
		{"DNS label too long", func(c *x509.Certificate) { c.DNSNames = []string{strings.Repeat("a", 64) + ".example.org"} }, "e_rfc_dnsname_label_too_long"},
		{"hyphen ending the SLD", func(c *x509.Certificate) { c.DNSNames = []string{"web.example-.org"} }, "e_rfc_dnsname_hyphen_in_sld"},
		{"URI host not a domain name", func(c *x509.Certificate) {
			c.URIs = []*url.URL{{Scheme: "spiffe", Host: "example_org", Path: "/web"}}
		}, "e_ext_san_uri_host_not_fqdn_or_ip"},
	}
	for _, d := range defects {
		t.Run(d.name, func(t *testing.T) {
			good(t, "web") // the shape is known
			n := issuance.FullLints(iss)
			issuance.SetTemplateHook(iss, d.hook)
			defer issuance.SetTemplateHook(iss, nil)
			_, err := iss.Issue(request(t, newKey(t, keys.ECDSAP256).Public(), mustIdentity(t, id)))
			var lerr *issuance.LintError
			if !errors.As(err, &lerr) || !strings.Contains(err.Error(), d.lint) {
				t.Fatalf("err = %v, want a *LintError naming %s", err, d.lint)
			}
			if issuance.FullLints(iss) != n+1 {
				t.Errorf("the defective leaf was refused without zlint")
			}
		})
	}
}

// TestPlainFormsPassZlint checks the claim the shape cache rests on: a leaf
// whose shape passed zlint passes it with any plain values. It issues
// leaves with generated plain DNS names and SPIFFE IDs, for every key
// type a plain leaf may have, and lints each one in full.
func TestPlainFormsPassZlint(t *testing.T) {
	p := testpki.New(t, "example.org")
	r := rand.New(rand.NewPCG(1, 2))
	p521, err := ecdsa.GenerateKey(elliptic.P521(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pubs := []crypto.PublicKey{newKey(t, keys.ECDSAP256).Public(), newKey(t, keys.ECDSAP384).Public(), p521.Public(), newKey(t, keys.Ed25519).Public()}
	n := 300
	if testing.Short() {
		n = 40
	}
	for i := range n {
		dns := []string{plainName(r)}
		if r.IntN(3) == 0 {
			dns = append(dns, plainName(r))
		}
		uri := "spiffe://example.org" + plainPath(r)
		for _, d := range dns {
			if !issuance.PlainDNSName(d) {
				t.Fatalf("generated %q is not plain", d)
			}
		}
		if _, ok := issuance.PlainSPIFFEID(uri); !ok {
			t.Fatalf("generated %q is not plain", uri)
		}
		u, err := url.Parse(uri)
		if err != nil {
			t.Fatal(err)
		}
		issuance.SetTemplateHook(p.Issuer, func(c *x509.Certificate) { c.DNSNames, c.URIs = dns, []*url.URL{u} })
		leaf, err := p.Issuer.Issue(request(t, pubs[i%len(pubs)], mustIdentity(t, "spiffe://example.org/x,x.example.org")))
		if err != nil {
			t.Fatalf("%v, %s: %v", dns, uri, err)
		}
		if err := issuance.Lint(leaf.Raw); err != nil {
			t.Fatalf("plain names %v and %s fail zlint: %v", dns, uri, err)
		}
	}
}

// plainName is a random DNS name of the plain form: LDH labels, hyphens
// inside, long labels and names included, sometimes a wildcard.
func plainName(r *rand.Rand) string {
	const alnum = "abcdefghijklmnopqrstuvwxyz0123456789"
	var labels []string
	if r.IntN(5) == 0 {
		labels = append(labels, "*")
	}
	total := 0
	for n := 2 + r.IntN(5); len(labels) < n || (labels[0] == "*" && len(labels) < 3); {
		size := 1 + r.IntN(20)
		if r.IntN(10) == 0 {
			size = 63
		}
		if total+size+1 > 253 {
			break
		}
		b := make([]byte, size)
		for i := range b {
			b[i] = alnum[r.IntN(len(alnum))]
			if i > 0 && i < size-1 && r.IntN(6) == 0 {
				b[i] = '-'
			}
		}
		if len(b) >= 4 && string(b[:4]) == "xn--" {
			b[0] = 'x'
			b[1] = 'y'
		}
		labels = append(labels, string(b))
		total += size + 1
	}
	return strings.Join(labels, ".")
}

// plainPath is a random SPIFFE ID path of the plain form.
func plainPath(r *rand.Rand) string {
	const chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_"
	var b strings.Builder
	for range r.IntN(5) {
		b.WriteByte('/')
		seg := make([]byte, 1+r.IntN(12))
		for i := range seg {
			seg[i] = chars[r.IntN(len(chars))]
		}
		if s := string(seg); s == "." || s == ".." {
			seg[0] = 'a'
		}
		b.Write(seg)
	}
	return b.String()
}

func TestPlainForms(t *testing.T) {
	for _, tt := range []struct {
		name  string
		plain bool
	}{
		{"web.example.org", true},
		{"a.b", true},
		{"*.svc.example.org", true},
		{"x-1.example.org", true},
		{"localhost", false}, // one label
		{"*.org", false},
		{"a.*.org", false},
		{"*", false},
		{"Web.example.org", false},
		{"xn--bcher-kva.example", false},
		{"web_1.example.org", false},
		{"-web.example.org", false},
		{"web-.example.org", false},
		{"web..example.org", false},
		{".web.example.org", false},
		{"web.example.org.", false},
		{strings.Repeat("a", 64) + ".org", false},
		{strings.Repeat("a.", 127) + "org", false},
		{"", false},
	} {
		if got := issuance.PlainDNSName(tt.name); got != tt.plain {
			t.Errorf("PlainDNSName(%q) = %v, want %v", tt.name, got, tt.plain)
		}
	}
	for _, tt := range []struct {
		uri, authority string
	}{
		{"spiffe://example.org/ns/prod/sa/web", "spiffe://example.org"},
		{"spiffe://example.org", "spiffe://example.org"},
		{"spiffe://example.org/a.b-c_D", "spiffe://example.org"},
		{"spiffe://example.org/", ""},
		{"spiffe://example.org//x", ""},
		{"spiffe://example.org/./x", ""},
		{"spiffe://example.org/../x", ""},
		{"spiffe://example.org/a%20b", ""},
		{"spiffe://example.org/x?y", ""},
		{"spiffe:///x", ""},
		{"https://example.org/x", ""},
	} {
		authority, ok := issuance.PlainSPIFFEID(tt.uri)
		if ok != (tt.authority != "") || authority != tt.authority {
			t.Errorf("PlainSPIFFEID(%q) = %q, %v; want %q", tt.uri, authority, ok, tt.authority)
		}
	}
}

// FuzzPlainDNSNamePassesZlint checks, for any name the plain form
// accepts, that a leaf naming it passes zlint.
func FuzzPlainDNSNamePassesZlint(f *testing.F) {
	for _, s := range []string{"web.example.org", "*.a.b", "0.0", "a-b.c-d", "1.2.3.4", "x.local", "com.com", "a.xn-a"} {
		f.Add(s)
	}
	p := testpki.New(f, "example.org")
	key := newKey(f, keys.ECDSAP256)
	f.Fuzz(func(t *testing.T, name string) {
		if !issuance.PlainDNSName(name) {
			return
		}
		issuance.SetTemplateHook(p.Issuer, func(c *x509.Certificate) { c.DNSNames = []string{name} })
		leaf, err := p.Issuer.Issue(request(t, key.Public(), mustIdentity(t, "spiffe://example.org/x,x.example.org")))
		if err != nil {
			t.Fatalf("%q: %v", name, err)
		}
		if err := issuance.Lint(leaf.Raw); err != nil {
			t.Fatalf("plain name %q fails zlint: %v", name, err)
		}
	})
}
