package mtls_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/mtls"
	"github.com/mica-pki/mica/mtls/workload"
	"github.com/mica-pki/mica/revocation"
)

// A server that takes its certificate from the files the mica agent keeps
// fresh, lets in only the production namespace, enforces revocations from
// the push feed (CRLs as the fallback) and tells handlers who called.
func Example_server() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	src, err := mtls.NewFileSource("/var/lib/mica-agent")
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()

	// The feed is itself mTLS: the subscriber presents our certificate and
	// checks that it reaches mica.
	feedTLS, err := mtls.ClientConfig(mtls.Options{Source: src, Authorize: mtls.AuthorizeIDs("mica.example.internal")})
	if err != nil {
		log.Fatal(err)
	}
	sub, err := revocation.NewSubscriber(revocation.Config{URL: "https://mica.example.internal:8443/v1/revocations/feed", TLS: feedTLS})
	if err != nil {
		log.Fatal(err)
	}
	go sub.Run(ctx)
	crl, err := mtls.NewCRLChecker(mtls.CRLConfig{Roots: src.Roots})
	if err != nil {
		log.Fatal(err)
	}
	go crl.Run(ctx)

	cfg, err := mtls.ServerConfig(mtls.Options{
		Source:      src,
		Authorize:   mtls.AuthorizePathPrefixes("spiffe://example.org/ns/prod/"),
		Revocations: sub.Set(),
		CRL:         crl,
	})
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Addr: ":8443", TLSConfig: cfg, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer, _ := mtls.PeerIdentity(r) // always there: the handshake required it
		fmt.Fprintf(w, "hello %s\n", peer.Identity)
	})}
	go func() { <-ctx.Done(); srv.Close() }()
	// No certificate files: the config's GetCertificate supplies them.
	log.Print(srv.ListenAndServeTLS("", ""))
}

// A client that takes its X509-SVID from the SPIFFE Workload API and talks
// only to the billing API, whatever host name it dials.
func Example_client() {
	ctx := context.Background()
	src, err := workload.NewSource(ctx, "unix:///run/mica/agent.sock")
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
	cfg, err := mtls.ClientConfig(mtls.Options{Source: src, Authorize: mtls.AuthorizeIDs("spiffe://example.org/billing/api")})
	if err != nil {
		log.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
	resp, err := hc.Get("https://billing.internal:8443/invoices")
	if err != nil {
		log.Fatal(err) // a refusal reads "mtls: peer … refused (reason): …"
	}
	defer resp.Body.Close()
	fmt.Println(resp.Status)
}

func ExampleAuthorizePathPrefixes() {
	allow := mtls.AuthorizePathPrefixes("spiffe://example.org/ns/prod/")
	for _, s := range []string{
		"spiffe://example.org/ns/prod/sa/web",
		"spiffe://example.org/ns/prod-evil/sa/web",
		"spiffe://example.org/ns/dev/sa/web",
	} {
		id, _ := identity.Parse(s)
		fmt.Println(s, allow(id, nil) == nil)
	}
	// Output:
	// spiffe://example.org/ns/prod/sa/web true
	// spiffe://example.org/ns/prod-evil/sa/web false
	// spiffe://example.org/ns/dev/sa/web false
}

// A verifier that needs no credential of its own and no TLS connection:
// here, the certificates that signed a message.
func ExampleVerifier_Verify() {
	bundle, err := os.ReadFile("/var/lib/mica-agent/bundle.pem")
	if err != nil {
		log.Fatal(err)
	}
	var roots []*x509.Certificate
	for b, rest := pem.Decode(bundle); b != nil; b, rest = pem.Decode(rest) {
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			log.Fatal(err)
		}
		roots = append(roots, c)
	}
	v, err := mtls.NewVerifier(mtls.VerifierConfig{
		Roots:     mtls.StaticRoots(roots...),
		Authorize: mtls.AuthorizePathPrefixes("spiffe://example.org/ns/prod/"),
		Usages:    []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		PinnedCAs: []mtls.SPKIPin{mtls.PinOf(roots[0])}, // only peers under this root
	})
	if err != nil {
		log.Fatal(err)
	}
	var signer []*x509.Certificate // the leaf and intermediates that came with the message
	peer, err := v.Verify(signer, mtls.VerifyOptions{})
	var rej *mtls.RejectError
	if errors.As(err, &rej) {
		log.Fatalf("refused (%s, a %s failure): %v", rej.Reason, rej.Reason.Class(), err)
	}
	fmt.Println("signed by", peer.Identity)
}
