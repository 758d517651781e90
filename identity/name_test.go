package identity

import (
	"crypto/x509"
	"net"
	"net/url"
	"strings"
	"testing"
)

func TestParseNameKinds(t *testing.T) {
	tests := []struct {
		in      string
		kind    Kind
		text    string
		wantErr string
	}{
		{in: "spiffe://example.org/admin", kind: KindSPIFFE, text: "spiffe://example.org/admin"},
		{in: "127.0.0.1", kind: KindIP, text: "127.0.0.1"},
		{in: "::ffff:127.0.0.1", kind: KindIP, text: "127.0.0.1"},
		{in: "Host.Example.", kind: KindDNS, text: "host.example"},
		{in: "bücher.example", kind: KindDNS, text: "xn--bcher-kva.example"},
		{in: "xn--bcher-kva.example", kind: KindDNS, text: "xn--bcher-kva.example"},
		{in: "xn--a.example", wantErr: "IDNA2008"},
		{in: "xn--0.example", wantErr: "IDNA2008"},
		{in: "ab--cd.example", wantErr: "reserves"},
		{in: "fe80::1%eth0", wantErr: "zone"},
		{in: "127.0.0.1.", wantErr: "all digits"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			n, err := ParseName(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseName(%q) = %v, %v; want an error containing %q", tt.in, n, err, tt.wantErr)
				}
				return
			}
			if err != nil || n.Kind() != tt.kind || n.String() != tt.text {
				t.Fatalf("ParseName(%q) = %v %q, %v; want %v %q", tt.in, n.Kind(), n, err, tt.kind, tt.text)
			}
		})
	}
}

// A dNSName SAN whose text reads like a name of another kind must never
// stand for that other kind: FromCertificate refuses it outright.
func TestFromCertificateRefusesNamesOfAnotherKindInDNS(t *testing.T) {
	for _, dns := range []string{"127.0.0.1", "::1", "spiffe://example.org/admin", "xn--a.example", "a b.example", ""} {
		t.Run(dns, func(t *testing.T) {
			_, err := FromCertificate(&x509.Certificate{DNSNames: []string{dns}})
			if err == nil {
				t.Fatalf("FromCertificate accepted DNS SAN %q", dns)
			}
		})
	}
}

func TestHasComparesKinds(t *testing.T) {
	u, _ := url.Parse("spiffe://example.org/admin")
	id, err := FromCertificate(&x509.Certificate{URIs: []*url.URL{u}, DNSNames: []string{"api.example.org"}, IPAddresses: []net.IP{net.ParseIP("10.0.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"spiffe://example.org/admin", "api.example.org", "10.0.0.1", "::ffff:10.0.0.1"} {
		n, err := ParseName(s)
		if err != nil || !id.Has(n) {
			t.Errorf("Has(%q) = false, %v; want true", s, err)
		}
	}
	// Same text, other kind: never equal.
	if (Name{kind: KindDNS, value: "10.0.0.1"}) == IPName(id.IPs[0]) {
		t.Fatal("a DNS name equals an IP name of the same text")
	}
	if id.Has(Name{kind: KindDNS, value: "10.0.0.1"}) || id.Has(Name{kind: KindDNS, value: "spiffe://example.org/admin"}) {
		t.Fatal("Has matched a name of another kind")
	}
	if got := id.PrimaryName(); got.Kind() != KindSPIFFE || got.String() != id.Primary() {
		t.Fatalf("PrimaryName = %v %q", got.Kind(), got)
	}
}
