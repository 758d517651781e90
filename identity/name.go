package identity

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/idna"
)

// Kind is the type of a name. A name is only ever compared with names of
// its own kind: a DNS name that reads "127.0.0.1" is not the IP address
// 127.0.0.1, and a DNS name that reads like a SPIFFE ID is no SPIFFE ID.
type Kind uint8

const (
	KindSPIFFE Kind = iota + 1 // a SPIFFE ID (the URI SAN of an X509-SVID)
	KindDNS                    // a DNS name (dNSName SAN), lower-case A-labels
	KindIP                     // an IP address (iPAddress SAN), IPv4 unmapped
)

func (k Kind) String() string {
	switch k {
	case KindSPIFFE:
		return "spiffe"
	case KindDNS:
		return "dns"
	case KindIP:
		return "ip"
	}
	return "none"
}

// Name is one name with its kind, in canonical form: SPIFFE IDs as the
// specification writes them, DNS names lower-case with A-labels and no
// trailing dot, IP addresses as netip writes them. Two names are the same
// name exactly when they are == (kind and text).
type Name struct {
	kind  Kind
	value string
}

// Kind is the name's kind; zero for the zero Name.
func (n Name) Kind() Kind { return n.kind }

// String is the name's canonical text.
func (n Name) String() string { return n.value }

// IsZero reports whether n is the zero Name.
func (n Name) IsZero() bool { return n.kind == 0 }

// SPIFFE returns n as a SPIFFE ID and true, or the zero ID and false when n
// is of another kind.
func (n Name) SPIFFE() (spiffeid.ID, bool) {
	if n.kind != KindSPIFFE {
		return spiffeid.ID{}, false
	}
	id, err := spiffeid.FromString(n.value)
	return id, err == nil
}

// IP returns n as an address and true, or false when n is of another kind.
func (n Name) IP() (netip.Addr, bool) {
	if n.kind != KindIP {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(n.value)
	return a, err == nil
}

// SPIFFEName is the name of a SPIFFE ID.
func SPIFFEName(id spiffeid.ID) Name {
	if id.IsZero() {
		return Name{}
	}
	return Name{kind: KindSPIFFE, value: id.String()}
}

// IPName is the name of an IP address (IPv4-mapped IPv6 addresses are
// unmapped, so 10.0.0.1 has one name).
func IPName(a netip.Addr) Name {
	if !a.IsValid() {
		return Name{}
	}
	return Name{kind: KindIP, value: a.Unmap().String()}
}

// DNSName checks and normalizes a DNS name (see [NormalizeDNS]).
func DNSName(s string) (Name, error) {
	n, err := NormalizeDNS(s)
	if err != nil {
		return Name{}, err
	}
	return Name{kind: KindDNS, value: n}, nil
}

// ParseName reads one name written as text. The text says the kind: a
// spiffe:// URI is a SPIFFE ID, text that parses as an IP address is an IP
// address, anything else must be a valid DNS name. This is for text a person
// wrote (flags, config files); names read from certificates keep the kind of
// the SAN they came from ([Identity.Names]).
func ParseName(s string) (Name, error) {
	switch {
	case strings.HasPrefix(strings.ToLower(s), "spiffe:"):
		id, err := spiffeid.FromString(s)
		if err != nil {
			return Name{}, fmt.Errorf("identity: %q is not a valid SPIFFE ID: %w", s, err)
		}
		return SPIFFEName(id), nil
	default:
		if a, err := netip.ParseAddr(s); err == nil {
			if a.Zone() != "" {
				return Name{}, fmt.Errorf("identity: IP address %q has a zone, which a certificate cannot carry: remove %%%s", s, a.Zone())
			}
			return IPName(a), nil
		}
		return DNSName(s)
	}
}

// Names lists every name of the identity with its kind, SPIFFE ID first,
// then DNS names, then IP addresses, in certificate order.
func (id Identity) Names() []Name {
	out := make([]Name, 0, 1+len(id.DNS)+len(id.IPs))
	if !id.SPIFFE.IsZero() {
		out = append(out, SPIFFEName(id.SPIFFE))
	}
	for _, d := range id.DNS {
		out = append(out, Name{kind: KindDNS, value: d})
	}
	for _, a := range id.IPs {
		out = append(out, IPName(a))
	}
	return out
}

// Has reports whether the identity carries the name n, of n's kind.
func (id Identity) Has(n Name) bool {
	switch n.kind {
	case KindSPIFFE:
		return !id.SPIFFE.IsZero() && id.SPIFFE.String() == n.value
	case KindDNS:
		for _, d := range id.DNS {
			if d == n.value {
				return true
			}
		}
	case KindIP:
		for _, a := range id.IPs {
			if a.Unmap().String() == n.value {
				return true
			}
		}
	}
	return false
}

// PrimaryName is [Identity.Primary] with its kind.
func (id Identity) PrimaryName() Name {
	names := id.Names()
	if len(names) == 0 {
		return Name{}
	}
	return names[0]
}

// idnaLabels validates A-labels (and converts U-labels) per IDNA2008
// (RFC 5891): the registration profile refuses what may not be registered,
// such as "xn--a", which decodes to a control character.
var idnaLabels = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.ValidateLabels(true),
	idna.CheckHyphens(true), idna.CheckJoiners(true), idna.Transitional(false))

// checkIDNA refuses a label that is not valid IDNA2008: an "xn--" label must
// decode to a valid U-label, and no other label may have hyphens in both the
// third and fourth positions (those are reserved for A-labels).
func checkIDNA(label string) error {
	if len(label) < 4 || label[2:4] != "--" {
		return nil
	}
	if !strings.HasPrefix(label, "xn--") {
		return fmt.Errorf("label %q has hyphens in its third and fourth positions, which IDNA2008 reserves for A-labels (xn--…)", label)
	}
	u, err := idna.Registration.ToUnicode(label)
	if err != nil {
		return fmt.Errorf("label %q is not a valid IDNA2008 A-label: %v", label, err)
	}
	if back, err := idna.Registration.ToASCII(u); err != nil || back != label {
		return fmt.Errorf("label %q is not a valid IDNA2008 A-label: it does not round-trip", label)
	}
	return nil
}

// toASCII turns a name written with U-labels into A-labels; ASCII names are
// returned as they are.
func toASCII(name string) (string, error) {
	for i := 0; i < len(name); i++ {
		if name[i] >= 0x80 {
			return idnaLabels.ToASCII(name)
		}
	}
	return name, nil
}
