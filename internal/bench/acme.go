package bench

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	xacme "golang.org/x/crypto/acme"

	"github.com/mica-pki/mica/internal/acme"
	"github.com/mica-pki/mica/internal/keys"
)

// ACMEResult is what `mica bench acme` reports.
type ACMEResult struct {
	Store       string  `json:"store"`
	Concurrency int     `json:"concurrency"`
	DurationSec float64 `json:"duration_seconds"`
	Orders      int     `json:"orders"`
	Errors      int     `json:"errors"`
	PerSecond   float64 `json:"orders_per_second"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	FirstError  string  `json:"first_error,omitempty"`
	Note        string  `json:"note"`
}

// ACME measures complete ACME orders with a standard Go client
// (golang.org/x/crypto/acme) against s's ACME door on loopback: new order →
// authorization → http-01 challenge, validated by the server over HTTP →
// finalize → download, each order its own round trips and validation.
// Accounts are registered and keys made before the clock starts; each of
// the concurrency workers has its own account.
func ACME(ctx context.Context, s *Server, concurrency int, d time.Duration) (ACMEResult, error) {
	res := ACMEResult{Store: s.Store, Concurrency: concurrency,
		Note: "in-process server and client on one machine; each order: newOrder, authz, http-01 validated over loopback, finalize, download"}
	// The http-01 responder: what a client's web server would serve. The
	// order is for 127.0.0.2, not 127.0.0.1: the server's own names
	// (server_names) are reserved and never issued to an ACME account.
	var answers sync.Map
	httpLn, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		return res, err
	}
	defer httpLn.Close()
	go http.Serve(httpLn, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v, ok := answers.Load(r.URL.Path); ok {
			fmt.Fprint(w, v)
			return
		}
		http.NotFound(w, r)
	}))
	ln, url, err := listenLoopback()
	if err != nil {
		return res, err
	}
	defer ln.Close()
	srv, err := acme.New(acme.Config{Authority: s.Authority, Store: s.ACME, Settings: acme.Settings{
		Profile: "server", URL: url + acme.Prefix, HTTP01Port: httpLn.Addr().(*net.TCPAddr).Port,
		OrdersPerAccountPerHour: 1 << 30, OrdersPerIdentifierPerHour: 1 << 30,
	}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return res, err
	}
	stop := serveTLSOn(s, ln, srv.Handler())
	defer stop()

	roots := x509.NewCertPool()
	roots.AddCert(s.Root)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, MaxIdleConnsPerHost: concurrency}}
	clients := make([]*xacme.Client, concurrency)
	for i := range clients {
		key, err := keys.Generate(keys.Default, rand.Reader)
		if err != nil {
			return res, err
		}
		clients[i] = &xacme.Client{Key: key, DirectoryURL: url + acme.Prefix + "directory", HTTPClient: hc}
		if _, err := clients[i].Register(ctx, &xacme.Account{}, xacme.AcceptTOS); err != nil {
			return res, fmt.Errorf("bench acme: registering an account: %w", err)
		}
	}
	csrs, err := csrPool(keys.Default, &x509.CertificateRequest{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 2)}})
	if err != nil {
		return res, err
	}
	order := func(c *xacme.Client, csr []byte) error {
		o, err := c.AuthorizeOrder(ctx, xacme.IPIDs("127.0.0.2"))
		if err != nil {
			return err
		}
		for _, u := range o.AuthzURLs {
			z, err := c.GetAuthorization(ctx, u)
			if err != nil {
				return err
			}
			for _, ch := range z.Challenges {
				if ch.Type != "http-01" {
					continue
				}
				ka, err := c.HTTP01ChallengeResponse(ch.Token)
				if err != nil {
					return err
				}
				answers.Store(c.HTTP01ChallengePath(ch.Token), ka)
				if _, err := c.Accept(ctx, ch); err != nil {
					return err
				}
			}
			if _, err := c.WaitAuthorization(ctx, u); err != nil {
				return err
			}
		}
		_, _, err = c.CreateOrderCert(ctx, o.FinalizeURL, csr, true)
		return err
	}

	start := time.Now()
	lat, failed, firstErr := Loop(ctx, concurrency, d, func(w, i int) error {
		return order(clients[w], csrs[(w+i*concurrency)%len(csrs)])
	})
	elapsed := time.Since(start)
	slices.Sort(lat)
	res.DurationSec, res.Orders, res.Errors = elapsed.Seconds(), len(lat), failed
	res.PerSecond = float64(len(lat)) / elapsed.Seconds()
	res.P50Ms, res.P99Ms = Ms(Percentile(lat, 0.50)), Ms(Percentile(lat, 0.99))
	if firstErr != nil {
		res.FirstError = firstErr.Error()
	}
	return res, nil
}

// WriteText prints r for people.
func (r ACMEResult) WriteText(w io.Writer) {
	fmt.Fprintf(w, "acme orders: %d in %.1fs at concurrency %d (%s): %.1f orders/s, p50 %.1f ms, p99 %.1f ms, %d errors\n",
		r.Orders, r.DurationSec, r.Concurrency, r.Store, r.PerSecond, r.P50Ms, r.P99Ms, r.Errors)
	if r.FirstError != "" {
		fmt.Fprintf(w, "first error: %s\n", r.FirstError)
	}
}
