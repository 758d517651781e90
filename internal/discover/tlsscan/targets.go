package tlsscan

import (
	"fmt"
	"iter"
	"math/big"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/discover"
)

// Target is one endpoint to scan.
type Target struct {
	// Host is a DNS name or an IP address, as the scan was given it.
	Host string
	Port int
	// ServerName is the SNI to send; empty sends Host when it is a name
	// and no SNI when it is an address.
	ServerName string
	// Scheme is how TLS starts: at once (tls) or after a STARTTLS
	// exchange (smtp, imap, postgres).
	Scheme discover.Scheme
}

// Location is where a certificate found at t was seen.
func (t Target) Location() discover.Location {
	return discover.Location{Scheme: t.Scheme, Host: t.Host, Port: t.Port, ServerName: t.ServerName}
}

// sni is the server name the handshake sends.
func (t Target) sni() string {
	if t.ServerName != "" {
		return t.ServerName
	}
	if _, err := netip.ParseAddr(t.Host); err == nil {
		return ""
	}
	return t.Host
}

// DefaultStartTLS is how TLS starts on the well-known ports of protocols
// that begin in plain text; every other port speaks TLS from the first
// byte.
var DefaultStartTLS = map[int]discover.Scheme{
	25: discover.SchemeSMTP, 587: discover.SchemeSMTP,
	143:  discover.SchemeIMAP,
	5432: discover.SchemePostgres,
}

// MaxTargets bounds one scan, so that a typo ("10.0.0.0/8" for
// "10.0.0.0/24") is refused instead of running for days.
const MaxTargets = 1 << 24

// maxNetworkBits is the largest network a scan expands: 2^20 addresses.
const maxNetworkBits = 20

// Spec says what to scan: every host (a name, an address, a network in
// CIDR notation, or host:port for one port of one host) on every port,
// once with no SNI or the host's own name and once more with each extra
// server name.
type Spec struct {
	Hosts       []string
	Ports       []int
	ServerNames []string
	// StartTLS says how TLS starts per port; ports it does not name use
	// DefaultStartTLS, then plain TLS.
	StartTLS map[int]discover.Scheme
}

// hostEntry is one parsed Hosts entry.
type hostEntry struct {
	host    string       // a name or address
	network netip.Prefix // or a network
	port    int          // 0: every port of the spec
}

func (s Spec) entries() ([]hostEntry, error) {
	var out []hostEntry
	for _, h := range s.Hosts {
		h = strings.TrimSpace(h)
		if h == "" || strings.HasPrefix(h, "#") {
			continue
		}
		e := hostEntry{host: h}
		if host, port, err := net.SplitHostPort(h); err == nil {
			p, err := strconv.Atoi(port)
			if err != nil || p < 1 || p > 65535 {
				return nil, fmt.Errorf("tlsscan: %q: port %q is not 1-65535", h, port)
			}
			e.host, e.port = host, p
		}
		if strings.Contains(e.host, "/") {
			p, err := netip.ParsePrefix(e.host)
			if err != nil {
				return nil, fmt.Errorf("tlsscan: %q is not a network like 10.0.0.0/24: %v", e.host, err)
			}
			if p.Addr().BitLen()-p.Bits() > maxNetworkBits {
				return nil, fmt.Errorf("tlsscan: network %s has more than 2^%d addresses: scan it in smaller parts", p, maxNetworkBits)
			}
			e.network, e.host = p.Masked(), ""
		} else if _, err := identity.ParseName(e.host); err != nil {
			return nil, fmt.Errorf("tlsscan: %q is neither a host name nor an address: %v", e.host, err)
		}
		if e.port == 0 && len(s.Ports) == 0 {
			return nil, fmt.Errorf("tlsscan: %q names no port and no ports were given: pass ports, or write host:port", h)
		}
		out = append(out, e)
	}
	for _, p := range s.Ports {
		if p < 1 || p > 65535 {
			return nil, fmt.Errorf("tlsscan: port %d is not 1-65535", p)
		}
	}
	for _, n := range s.ServerNames {
		if _, err := identity.DNSName(n); err != nil {
			return nil, fmt.Errorf("tlsscan: server name %q: %v", n, err)
		}
	}
	return out, nil
}

// Count is how many targets the spec expands to; it fails on a spec
// Targets would refuse, or one of more than MaxTargets.
func (s Spec) Count() (int, error) {
	entries, err := s.entries()
	if err != nil {
		return 0, err
	}
	total := new(big.Int)
	names := big.NewInt(int64(1 + len(s.ServerNames)))
	for _, e := range entries {
		hosts := big.NewInt(1)
		if e.network.IsValid() {
			bits := e.network.Addr().BitLen() - e.network.Bits()
			hosts.Lsh(hosts, uint(bits))
			if e.network.Addr().Is4() && bits >= 2 {
				hosts.Sub(hosts, big.NewInt(2)) // no network or broadcast address
			}
		}
		ports := big.NewInt(int64(len(s.Ports)))
		if e.port != 0 {
			ports.SetInt64(1)
		}
		total.Add(total, hosts.Mul(hosts, ports.Mul(ports, names)))
	}
	if !total.IsInt64() || total.Int64() > MaxTargets {
		return 0, fmt.Errorf("tlsscan: the scan has %s targets, more than %d: scan fewer networks or ports at a time", total, MaxTargets)
	}
	return int(total.Int64()), nil
}

// Targets yields every target of the spec, host by host, without holding
// them all. Call Count first to check the spec.
func (s Spec) Targets() iter.Seq[Target] {
	entries, _ := s.entries()
	return func(yield func(Target) bool) {
		for _, e := range entries {
			ports := s.Ports
			if e.port != 0 {
				ports = []int{e.port}
			}
			for host := range e.hosts() {
				for _, port := range ports {
					scheme := s.scheme(port)
					if !yield(Target{Host: host, Port: port, Scheme: scheme}) {
						return
					}
					for _, n := range s.ServerNames {
						if !yield(Target{Host: host, Port: port, ServerName: n, Scheme: scheme}) {
							return
						}
					}
				}
			}
		}
	}
}

func (s Spec) scheme(port int) discover.Scheme {
	if sc, ok := s.StartTLS[port]; ok {
		return sc
	}
	if sc, ok := DefaultStartTLS[port]; ok {
		return sc
	}
	return discover.SchemeTLS
}

// hosts yields the entry's host, or every address of its network (for
// IPv4 networks of more than two addresses, without the network and
// broadcast addresses).
func (e hostEntry) hosts() iter.Seq[string] {
	return func(yield func(string) bool) {
		if !e.network.IsValid() {
			yield(e.host)
			return
		}
		first, bits := e.network.Addr(), e.network.Addr().BitLen()-e.network.Bits()
		skipEnds := first.Is4() && bits >= 2
		for a := first; a.IsValid() && e.network.Contains(a); a = a.Next() {
			if skipEnds && (a == first || !e.network.Contains(a.Next())) {
				continue
			}
			if !yield(a.String()) {
				return
			}
		}
	}
}

// ParsePorts reads a port list like "443,8443,9000-9010".
func ParsePorts(s string) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err1 := strconv.Atoi(lo)
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || a < 1 || b > 65535 || a > b {
			return nil, fmt.Errorf("tlsscan: %q is not a port or a range like 9000-9010 within 1-65535", part)
		}
		for p := a; p <= b; p++ {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// ParseStartTLS reads "port=protocol" pairs like "2525=smtp,1143=imap"
// (protocols: smtp, imap, postgres, or tls for none).
func ParseStartTLS(s string) (map[int]discover.Scheme, error) {
	out := map[int]discover.Scheme{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		port, proto, ok := strings.Cut(part, "=")
		p, err := strconv.Atoi(port)
		sc := discover.Scheme(proto)
		if !ok || err != nil || p < 1 || p > 65535 || !sc.Endpoint() {
			return nil, fmt.Errorf("tlsscan: %q is not port=protocol with protocol smtp, imap, postgres or tls", part)
		}
		out[p] = sc
	}
	return out, nil
}
