// Package testaddr gives a test a loopback address and port for a program
// that cannot listen on port 0 and say which port it got (PostgreSQL,
// Prometheus, lego, certbot), or for a server that must come back on the
// address it had.
//
// Listening on 127.0.0.1:0, closing, and handing the port on is a race:
// between the close and the program's bind, the kernel may give that port
// to any other socket on the machine (an outgoing connection, another
// test's listener). The address New returns cannot be taken that way: the
// port lies below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range), from which alone the kernel picks ports
// by itself, and on Linux the address is a loopback address of its own
// (127.x.y.z, x ≥ 128, at random), so that tests running at once do not
// meet either. Only a program told that very address could take it.
package testaddr

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// lowest is the lowest port handed out: above the ports the machine's
// own services commonly listen on, on every address.
const lowest = 10000

// New returns a free TCP address on loopback for t: see the package
// comment for why it stays free until the program under test binds it.
func New(t testing.TB) netip.AddrPort {
	t.Helper()
	return Ports(t, 1)[0]
}

// Ports is n addresses like New's, all on one IP address, for a program
// that a name resolves to and that listens on several ports.
func Ports(t testing.TB, n int) []netip.AddrPort {
	t.Helper()
	aps, err := pick(true, n)
	if err != nil {
		t.Fatal(err)
	}
	return aps
}

// Pick is New for code that has no test at hand (a cluster shared by a
// test binary).
func Pick() (netip.AddrPort, error) {
	aps, err := pick(true, 1)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return aps[0], nil
}

// Localhost is New on 127.0.0.1, for a server whose certificate names
// only that address. The port is still one the kernel gives no socket by
// itself; only another test told the same port at the same time could
// take it, so prefer New where the address may be any.
func Localhost(t testing.TB) netip.AddrPort {
	t.Helper()
	aps, err := pick(false, 1)
	if err != nil {
		t.Fatal(err)
	}
	return aps[0]
}

// pick returns n free ports below the ephemeral range on one loopback
// address: 127.0.0.1, or one of its own when ownAddress is set and the
// system is Linux.
func pick(ownAddress bool, n int) ([]netip.AddrPort, error) {
	ceiling, linux := ephemeralStart()
	if ceiling <= lowest {
		return nil, fmt.Errorf("testaddr: the kernel's ephemeral ports start at %d, leaving none below for tests: raise the start of net.ipv4.ip_local_port_range above %d", ceiling, lowest)
	}
	addr := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	if ownAddress && linux {
		addr = netip.AddrFrom4([4]byte{127, byte(128 + rand.IntN(128)), byte(rand.IntN(256)), byte(1 + rand.IntN(254))})
	}
	var out []netip.AddrPort
	for len(out) < n {
		ap, err := firstFree(func() netip.AddrPort {
			return netip.AddrPortFrom(addr, uint16(lowest+rand.IntN(ceiling-lowest)))
		})
		if err != nil {
			return nil, err
		}
		if !slices.Contains(out, ap) {
			out = append(out, ap)
		}
	}
	return out, nil
}

// firstFree returns the first of up to 20 candidates that can be bound
// now: a listener of the machine on the wildcard address with the same
// port would refuse the program's bind later.
func firstFree(candidate func() netip.AddrPort) (netip.AddrPort, error) {
	var err error
	for range 20 {
		ap := candidate()
		var ln net.Listener
		if ln, err = net.Listen("tcp", ap.String()); err == nil {
			ln.Close()
			return ap, nil
		}
	}
	return netip.AddrPort{}, fmt.Errorf("testaddr: no free loopback address in 20 tries; the last: %w", err)
}

// ephemeralStart is the first port of the kernel's ephemeral range, and
// whether all of 127.0.0.0/8 answers (Linux).
func ephemeralStart() (port int, linux bool) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		// Not Linux: only 127.0.0.1 is sure to be up; stay below both
		// the IANA range (49152) and Linux's default (32768).
		return 32768, false
	}
	if f := strings.Fields(string(b)); len(f) == 2 {
		if n, err := strconv.Atoi(f[0]); err == nil {
			return n, true
		}
	}
	return 32768, true
}
