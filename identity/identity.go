// Package identity holds the machine identities mica issues: a SPIFFE ID
// (exactly one URI SAN, per the X509-SVID specification) and/or DNS names and
// IP addresses for servers.
//
// Start with [FromCertificate] to read the identity out of a certificate and
// [Identity.Primary] for the single string mica files a certificate under.
package identity

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Identity is what a certificate vouches for.
type Identity struct {
	// SPIFFE is the workload's SPIFFE ID; the zero ID when the certificate
	// names only DNS names or IPs.
	SPIFFE spiffeid.ID
	DNS    []string
	IPs    []netip.Addr
}

// ErrNoIdentity is returned when a certificate or request names nothing.
var ErrNoIdentity = errors.New("identity: no SPIFFE ID, DNS name or IP address")

// Primary is the one string an identity is filed under: the SPIFFE ID when
// there is one, else the first DNS name, else the first IP address.
func (id Identity) Primary() string {
	switch {
	case !id.SPIFFE.IsZero():
		return id.SPIFFE.String()
	case len(id.DNS) > 0:
		return id.DNS[0]
	case len(id.IPs) > 0:
		return id.IPs[0].String()
	}
	return ""
}

// SANs lists every subject alternative name as text, SPIFFE ID first.
func (id Identity) SANs() []string {
	out := make([]string, 0, 1+len(id.DNS)+len(id.IPs))
	if !id.SPIFFE.IsZero() {
		out = append(out, id.SPIFFE.String())
	}
	out = append(out, id.DNS...)
	for _, ip := range id.IPs {
		out = append(out, ip.String())
	}
	return out
}

// IsZero reports whether the identity names nothing.
func (id Identity) IsZero() bool {
	return id.SPIFFE.IsZero() && len(id.DNS) == 0 && len(id.IPs) == 0
}

// Equal reports whether two identities name exactly the same things in the
// same order.
func (id Identity) Equal(o Identity) bool {
	if id.SPIFFE != o.SPIFFE || len(id.DNS) != len(o.DNS) || len(id.IPs) != len(o.IPs) {
		return false
	}
	for i := range id.DNS {
		if id.DNS[i] != o.DNS[i] {
			return false
		}
	}
	for i := range id.IPs {
		if id.IPs[i] != o.IPs[i] {
			return false
		}
	}
	return true
}

// String is the SANs joined by commas, for messages.
func (id Identity) String() string { return strings.Join(id.SANs(), ",") }

// Parse reads one identity given as text: a spiffe:// URI, an IP address or a
// DNS name. Several may be joined with commas ("spiffe://td/x,host.example").
func Parse(s string) (Identity, error) {
	var id Identity
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if err := id.add(part); err != nil {
			return Identity{}, err
		}
	}
	if id.IsZero() {
		return Identity{}, ErrNoIdentity
	}
	return id, nil
}

func (id *Identity) add(text string) error {
	n, err := ParseName(text)
	if err != nil {
		return err
	}
	switch n.kind {
	case KindSPIFFE:
		if !id.SPIFFE.IsZero() {
			return fmt.Errorf("identity: more than one SPIFFE ID (%s and %s): an X509-SVID carries exactly one", id.SPIFFE, text)
		}
		id.SPIFFE, _ = n.SPIFFE()
	case KindIP:
		a, _ := n.IP()
		id.IPs = append(id.IPs, a)
	case KindDNS:
		id.DNS = append(id.DNS, n.value)
	}
	return nil
}

// NormalizeDNS lower-cases a DNS name and checks that it is a syntactically
// valid host name, allowing a leading "*." wildcard label (whether a wildcard
// is permitted is policy's decision, not syntax's).
//
// Names are IDNA2008: U-labels ("bücher.example") are converted to A-labels
// ("xn--bcher-kva.example"), and an A-label that does not decode to a valid
// U-label ("xn--a") is refused.
func NormalizeDNS(name string) (string, error) {
	ascii, err := toASCII(name)
	if err != nil {
		return "", fmt.Errorf("identity: %q is not a valid DNS name: %v", name, err)
	}
	n := strings.ToLower(strings.TrimSuffix(ascii, "."))
	if n == "" || len(n) > 253 {
		return "", fmt.Errorf("identity: %q is not a valid DNS name: empty or longer than 253 characters", name)
	}
	labels := strings.Split(n, ".")
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		// An all-numeric last label is no host name (RFC 1123 §2.1) and
		// would read back as an IP address.
		return "", fmt.Errorf("identity: %q is not a valid DNS name: its last label is all digits (write an IP address without a trailing dot)", name)
	}
	for i, l := range labels {
		if i == 0 && l == "*" && len(labels) > 1 {
			continue
		}
		if !ValidLabel(l) {
			return "", fmt.Errorf("identity: %q is not a valid DNS name: label %q must be 1-63 letters, digits or hyphens, not starting or ending with a hyphen", name, l)
		}
		if err := checkIDNA(l); err != nil {
			return "", fmt.Errorf("identity: %q is not a valid DNS name: %v", name, err)
		}
	}
	return n, nil
}

// ValidLabel reports whether l is one DNS label as mica accepts it: 1 to 63
// lower-case letters, digits or hyphens, not starting or ending with a hyphen.
func ValidLabel(l string) bool {
	if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// FromCertificate reads the identity a certificate vouches for. Per the
// X509-SVID specification a certificate carries at most one URI SAN and it
// must be a SPIFFE ID; anything else is an error rather than silently ignored.
func FromCertificate(cert *x509.Certificate) (Identity, error) {
	var id Identity
	if len(cert.URIs) > 1 {
		return Identity{}, fmt.Errorf("identity: certificate has %d URI SANs; an X509-SVID has exactly one", len(cert.URIs))
	}
	if len(cert.URIs) == 1 {
		sid, err := spiffeid.FromURI(cert.URIs[0])
		if err != nil {
			return Identity{}, fmt.Errorf("identity: certificate URI SAN %q is not a SPIFFE ID: %w", cert.URIs[0], err)
		}
		id.SPIFFE = sid
	}
	// A DNS SAN is read as a DNS name and must be one: text such as
	// "127.0.0.1" or "spiffe://…" in a dNSName is refused here rather than
	// carried on, where it could be mistaken for a name of another kind.
	for _, d := range cert.DNSNames {
		n, err := NormalizeDNS(d)
		if err != nil {
			return Identity{}, fmt.Errorf("identity: certificate DNS SAN %q is not a DNS name: %w", d, err)
		}
		id.DNS = append(id.DNS, n)
	}
	for _, ip := range cert.IPAddresses {
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			return Identity{}, fmt.Errorf("identity: certificate IP SAN of %d bytes is not an IP address", len(ip))
		}
		id.IPs = append(id.IPs, a.Unmap())
	}
	if id.IsZero() {
		return Identity{}, ErrNoIdentity
	}
	return id, nil
}

// FromCSR reads the identity a certificate request asks for, with the same
// rules as [FromCertificate].
func FromCSR(csr *x509.CertificateRequest) (Identity, error) {
	return FromCertificate(&x509.Certificate{URIs: csr.URIs, DNSNames: csr.DNSNames, IPAddresses: csr.IPAddresses})
}
