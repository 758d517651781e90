package identity

import (
	"crypto/x509"
	"net"
	"net/url"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		primary string
		sans    []string
		wantErr string
	}{
		{in: "spiffe://example.org/billing/api", primary: "spiffe://example.org/billing/api", sans: []string{"spiffe://example.org/billing/api"}},
		{in: "API.Example.org.", primary: "api.example.org", sans: []string{"api.example.org"}},
		{in: "10.1.2.3", primary: "10.1.2.3", sans: []string{"10.1.2.3"}},
		{in: "::ffff:10.1.2.3", primary: "10.1.2.3", sans: []string{"10.1.2.3"}},
		{in: "spiffe://example.org/a, a.example, 10.0.0.1", primary: "spiffe://example.org/a", sans: []string{"spiffe://example.org/a", "a.example", "10.0.0.1"}},
		{in: "*.svc.example.org", primary: "*.svc.example.org", sans: []string{"*.svc.example.org"}},
		{in: "", wantErr: "no SPIFFE ID"},
		{in: "spiffe://example.org/a,spiffe://example.org/b", wantErr: "more than one SPIFFE ID"},
		{in: "spiffe://Example.org/a", wantErr: "not a valid SPIFFE ID"},
		{in: "spiffe://example.org/a/../b", wantErr: "not a valid SPIFFE ID"},
		{in: "bad_name.example", wantErr: "not a valid DNS name"},
		{in: "-lead.example", wantErr: "not a valid DNS name"},
		{in: "a.*.example", wantErr: "not a valid DNS name"},
		{in: strings.Repeat("a", 64) + ".example", wantErr: "not a valid DNS name"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			id, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id.Primary() != tt.primary || strings.Join(id.SANs(), " ") != strings.Join(tt.sans, " ") {
				t.Fatalf("Parse(%q) = primary %q, SANs %v; want %q, %v", tt.in, id.Primary(), id.SANs(), tt.primary, tt.sans)
			}
			again, err := Parse(id.String())
			if err != nil || !again.Equal(id) {
				t.Fatalf("String() does not round-trip: %q → %v, %v", id.String(), again, err)
			}
		})
	}
}

func TestFromCertificate(t *testing.T) {
	u := func(s string) *url.URL { p, _ := url.Parse(s); return p }
	tests := []struct {
		name    string
		cert    *x509.Certificate
		want    string
		wantErr string
	}{
		{"svid", &x509.Certificate{URIs: []*url.URL{u("spiffe://example.org/x")}}, "spiffe://example.org/x", ""},
		{"dns and ip", &x509.Certificate{DNSNames: []string{"a.example"}, IPAddresses: []net.IP{net.ParseIP("10.0.0.1")}}, "a.example,10.0.0.1", ""},
		{"two URIs", &x509.Certificate{URIs: []*url.URL{u("spiffe://example.org/x"), u("spiffe://example.org/y")}}, "", "exactly one"},
		{"non-SPIFFE URI", &x509.Certificate{URIs: []*url.URL{u("https://example.org/x")}}, "", "not a SPIFFE ID"},
		{"nothing", &x509.Certificate{}, "", "no SPIFFE ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := FromCertificate(tt.cert)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || id.String() != tt.want {
				t.Fatalf("= %q, %v; want %q", id.String(), err, tt.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"spiffe://example.org/a", "a.example", "10.0.0.1", "*.x.example", "spiffe://td/a,b.example"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := Parse(s)
		if err != nil {
			return
		}
		if id.IsZero() || id.Primary() == "" {
			t.Fatalf("Parse(%q) accepted an empty identity", s)
		}
		again, err := Parse(id.String())
		if err != nil || !again.Equal(id) {
			t.Fatalf("Parse(%q) = %v does not round-trip: %v", s, id, err)
		}
	})
}
