package workloadapi

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	gsw "github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/testpki"
)

// fakeAgent is a hand-made Snapshot source whose SVID can be rotated.
type fakeAgent struct {
	mu      sync.Mutex
	snap    Snapshot
	changed chan struct{}
}

func (f *fakeAgent) Snapshot() (Snapshot, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snap, f.changed
}

func (f *fakeAgent) set(s Snapshot) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snap = s
	close(f.changed)
	f.changed = make(chan struct{})
}

func serve(t *testing.T) (*fakeAgent, *testpki.PKI, string) {
	t.Helper()
	pki := testpki.New(t, "example.org")
	fa := &fakeAgent{changed: make(chan struct{})}
	fa.set(snapshotFor(t, pki))
	s, err := New(Config{Snapshot: fa.Snapshot, FetchJWTSVID: func(context.Context, spiffeid.ID, []string) (string, error) {
		return "not-a-jwt", nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "api.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return fa, pki, sock
}

func snapshotFor(t *testing.T, pki *testpki.PKI) Snapshot {
	id, _ := identity.Parse("spiffe://example.org/billing/api")
	leaf := pki.Leaf(t, id)
	return Snapshot{
		SVIDs:       []X509SVID{{ID: spiffeid.RequireFromString("spiffe://example.org/billing/api"), Chain: append([]*x509.Certificate{leaf.Cert}, leaf.Chain...), Key: leaf.Key}},
		TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
		Roots:       []*x509.Certificate{pki.Root},
		JWTBundle:   []byte(`{"keys":[]}`),
	}
}

func TestHeaderRequired(t *testing.T) {
	_, _, sock := serve(t)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := workload.NewSpiffeWorkloadAPIClient(conn)
	ctx := context.Background()
	recv := func(s interface{ RecvMsg(any) error }, err error) error {
		if err != nil {
			return err
		}
		return s.RecvMsg(new(workload.X509SVIDResponse))
	}
	tests := []struct {
		name string
		call func() error
	}{
		{"FetchX509SVID", func() error { s, err := c.FetchX509SVID(ctx, &workload.X509SVIDRequest{}); return recv(s, err) }},
		{"FetchX509Bundles", func() error { s, err := c.FetchX509Bundles(ctx, &workload.X509BundlesRequest{}); return recv(s, err) }},
		{"FetchJWTBundles", func() error { s, err := c.FetchJWTBundles(ctx, &workload.JWTBundlesRequest{}); return recv(s, err) }},
		{"FetchJWTSVID", func() error {
			_, err := c.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"a"}})
			return err
		}},
		{"ValidateJWTSVID", func() error {
			_, err := c.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "a", Svid: "x"})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); status.Code(err) != codes.InvalidArgument {
				t.Errorf("without the security header: %v, want InvalidArgument", err)
			}
		})
	}
}

func TestRotationPushedToOpenStream(t *testing.T) {
	fa, pki, sock := serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	updates := make(chan string, 4)
	go gsw.WatchX509Context(ctx, watcher(updates), gsw.WithAddr("unix://"+sock))
	first := <-updates
	fa.set(snapshotFor(t, pki))
	if second := <-updates; second == first {
		t.Fatal("the rotation was not pushed: same serial twice")
	}
}

type watcher chan string

func (w watcher) OnX509ContextUpdate(c *gsw.X509Context) {
	w <- c.SVIDs[0].Certificates[0].SerialNumber.String()
}
func (w watcher) OnX509ContextWatchError(error) {}

func TestEntitlementAllows(t *testing.T) {
	me := Caller{PID: 7, UID: 1000, GID: 100}
	tests := []struct {
		name  string
		e     Entitlement
		known bool
		want  bool
	}{
		{"no lists: every local process", Entitlement{}, true, true},
		{"no lists, caller unknown", Entitlement{}, false, true},
		{"uid listed", Entitlement{UIDs: []uint32{0, 1000}}, true, true},
		{"gid listed", Entitlement{UIDs: []uint32{0}, GIDs: []uint32{100}}, true, true},
		{"neither listed", Entitlement{UIDs: []uint32{1001}, GIDs: []uint32{101}}, true, false},
		{"restricted, caller unknown", Entitlement{UIDs: []uint32{1000}}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.e.Allows(me, tt.known); got != tt.want {
				t.Errorf("Allows = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestEntitledByCaller: over the real socket, the kernel's word on the
// caller decides which identities it gets.
func TestEntitledByCaller(t *testing.T) {
	pki := testpki.New(t, "example.org")
	me := uint32(os.Getuid())
	tests := []struct {
		name string
		e    Entitlement
		want codes.Code
	}{
		{"everyone", Entitlement{}, codes.OK},
		{"this uid", Entitlement{UIDs: []uint32{me}}, codes.OK},
		{"this gid", Entitlement{UIDs: []uint32{me + 1}, GIDs: []uint32{uint32(os.Getgid())}}, codes.OK},
		{"another uid", Entitlement{UIDs: []uint32{me + 1}}, codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fa := &fakeAgent{changed: make(chan struct{})}
			snap := snapshotFor(t, pki)
			snap.SVIDs[0].Entitlement = tt.e
			fa.set(snap)
			s, err := New(Config{Snapshot: fa.Snapshot,
				FetchJWTSVID: func(context.Context, spiffeid.ID, []string) (string, error) { return "", nil }})
			if err != nil {
				t.Fatal(err)
			}
			sock := filepath.Join(t.TempDir(), "api.sock")
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error)
			ln, err := Listen(sock)
			if err != nil {
				t.Fatal(err)
			}
			go func() { done <- s.Serve(ctx, ln) }()
			defer func() { cancel(); <-done }()
			fctx, fcancel := context.WithTimeout(ctx, 20*time.Second)
			defer fcancel()
			conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(
				metadata.AppendToOutgoingContext(fctx, "workload.spiffe.io", "true"), &workload.X509SVIDRequest{})
			if err == nil {
				_, err = stream.Recv()
			}
			if status.Code(err) != tt.want {
				t.Errorf("FetchX509SVID: %v, want %v", err, tt.want)
			}
			_, err = workload.NewSpiffeWorkloadAPIClient(conn).FetchJWTSVID(
				metadata.AppendToOutgoingContext(fctx, "workload.spiffe.io", "true"), &workload.JWTSVIDRequest{Audience: []string{"db"}})
			if status.Code(err) != tt.want {
				t.Errorf("FetchJWTSVID: %v, want %v", err, tt.want)
			}
		})
	}
}
