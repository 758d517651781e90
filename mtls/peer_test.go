package mtls_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/mica-pki/mica/internal/testpki"
	"github.com/mica-pki/mica/mtls"
)

// TestPeerIdentityOverHTTP: a handler behind an http.Server with
// ServerConfig learns the client's identity, serial and fingerprint.
func TestPeerIdentityOverHTTP(t *testing.T) {
	pki := testpki.New(t, "example.org")
	client := pki.Leaf(t, pki.ID(t, clientPath))
	cfg := mustConfig(t, mtls.ServerConfig, mtls.Options{Source: sourceOf(pki, pki.Leaf(t, pki.ID(t, serverPath))),
		Authorize: mtls.AuthorizeTrustDomains("example.org")})
	srv := &http.Server{TLSConfig: cfg, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := mtls.PeerIdentity(r)
		if !ok {
			http.Error(w, "no peer", http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, "%s %s %s", p.Identity, p.Serial, p.Fingerprint)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })

	clientCfg := mustConfig(t, mtls.ClientConfig, mtls.Options{Source: sourceOf(pki, client),
		Authorize: mtls.AuthorizeIDs("spiffe://example.org" + serverPath)})
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientCfg, ForceAttemptHTTP2: true}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	sum := sha256.Sum256(client.Cert.Raw)
	want := fmt.Sprintf("spiffe://example.org%s %s %s", clientPath, client.Cert.SerialNumber.Text(16), hex.EncodeToString(sum[:]))
	if resp.StatusCode != http.StatusOK || string(body) != want {
		t.Fatalf("handler saw %d %q, want %q", resp.StatusCode, body, want)
	}
	if resp.ProtoMajor != 2 {
		t.Errorf("protocol %s: HTTP/2 was not negotiated through the mtls config", resp.Proto)
	}

	if _, ok := mtls.PeerIdentity(&http.Request{}); ok {
		t.Error("a request without TLS has a peer")
	}
}
