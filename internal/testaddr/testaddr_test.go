package testaddr

import (
	"net"
	"net/netip"
	"testing"
)

func TestNew(t *testing.T) {
	start, _ := ephemeralStart()
	seen := map[netip.AddrPort]bool{}
	for range 50 {
		ap := New(t)
		if !ap.Addr().IsLoopback() {
			t.Fatalf("%s is not a loopback address", ap)
		}
		if p := int(ap.Port()); p < lowest || p >= start {
			t.Fatalf("%s: port outside [%d, %d), below the ephemeral range", ap, lowest, start)
		}
		seen[ap] = true
		// The program under test can bind it.
		ln, err := net.Listen("tcp", ap.String())
		if err != nil {
			t.Fatalf("bind %s: %v", ap, err)
		}
		ln.Close()
	}
	if len(seen) < 45 {
		t.Errorf("50 calls gave only %d addresses: tests running at once would meet", len(seen))
	}
}

func TestPorts(t *testing.T) {
	aps := Ports(t, 3)
	if len(aps) != 3 || aps[0].Addr() != aps[1].Addr() || aps[1].Addr() != aps[2].Addr() ||
		aps[0].Port() == aps[1].Port() || aps[1].Port() == aps[2].Port() || aps[0].Port() == aps[2].Port() {
		t.Fatalf("Ports(3) = %v, want three ports on one address", aps)
	}
	for _, ap := range aps {
		ln, err := net.Listen("tcp", ap.String())
		if err != nil {
			t.Fatalf("bind %s: %v", ap, err)
		}
		defer ln.Close()
	}
}

func TestLocalhost(t *testing.T) {
	start, _ := ephemeralStart()
	ap := Localhost(t)
	if ap.Addr() != netip.MustParseAddr("127.0.0.1") || int(ap.Port()) < lowest || int(ap.Port()) >= start {
		t.Fatalf("Localhost = %s, want 127.0.0.1 with a port in [%d, %d)", ap, lowest, start)
	}
	ln, err := net.Listen("tcp", ap.String())
	if err != nil {
		t.Fatalf("bind %s: %v", ap, err)
	}
	ln.Close()
}

// TestFirstFreeSkipsTakenPort: a port the machine holds on every address
// (a service listening on the wildcard address) is not handed out.
func TestFirstFreeSkipsTakenPort(t *testing.T) {
	held, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	port := uint16(held.Addr().(*net.TCPAddr).Port)
	taken := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
	free := New(t)
	calls := 0
	got, err := firstFree(func() netip.AddrPort {
		calls++
		if calls == 1 {
			return taken
		}
		return free
	})
	if err != nil || got != free || calls != 2 {
		t.Errorf("firstFree = %s, %v after %d candidates, want %s after 2 (%s is held)", got, err, calls, free, taken)
	}
}
