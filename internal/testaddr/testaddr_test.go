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
