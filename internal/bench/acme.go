package bench

import (
	"context"
	"crypto"
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
	// The http-01 responder: what a client's web server would serve, on
	// the addresses the orders name. Orders spread over many loopback
	// addresses, as a fleet's names do, so that the per-identity issuance
	// limit (a burst of ten, then one a minute) bounds none of them; they
	// are not 127.0.0.1, since the server's own names (server_names) are
	// never issued to an ACME account.
	var answers sync.Map
	addrs, port, err := listenHTTP01(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v, ok := answers.Load(r.URL.Path); ok {
			fmt.Fprint(w, v)
			return
		}
		http.NotFound(w, r)
	}))
	if err != nil {
		return res, err
	}
	defer closeAll(addrs)
	ln, url, err := listenLoopback()
	if err != nil {
		return res, err
	}
	defer ln.Close()
	srv, err := acme.New(acme.Config{Authority: s.Authority, Store: s.ACME, Settings: acme.Settings{
		Profile: "server", URL: url + acme.Prefix, HTTP01Port: port,
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
	csrKeys := make([]crypto.Signer, csrPoolSize)
	for i := range csrKeys {
		if csrKeys[i], err = keys.Generate(keys.Default, rand.Reader); err != nil {
			return res, err
		}
	}
	order := func(c *xacme.Client, key crypto.Signer, ip net.IP) error {
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{IPAddresses: []net.IP{ip}}, key)
		if err != nil {
			return err
		}
		o, err := c.AuthorizeOrder(ctx, xacme.IPIDs(ip.String()))
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
		n := w + i*concurrency
		return order(clients[w], csrKeys[n%len(csrKeys)], addrs[n%len(addrs)].Addr().(*net.TCPAddr).IP)
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

// http01Addresses is how many loopback addresses the ACME benchmark's
// orders spread over: at the default per-identity limit's burst of ten,
// enough for thousands of orders before any waits.
const http01Addresses = 250

// listenHTTP01 serves h on 127.0.0.2 and the next addresses up to
// http01Addresses, all on one port (an ACME server validates http-01 on one
// port for every name). It tries a few ports before giving up, since another
// program may hold the first address's port on one of the others.
func listenHTTP01(h http.Handler) ([]net.Listener, int, error) {
	for range 5 {
		lns, port, err := listenAllOnOnePort()
		if err != nil {
			return nil, 0, err
		}
		if lns != nil {
			for _, ln := range lns {
				go http.Serve(ln, h)
			}
			return lns, port, nil
		}
	}
	return nil, 0, fmt.Errorf("bench acme: no port free on all of 127.0.0.2–127.0.0.%d after 5 tries: free some loopback ports and run it again", 1+http01Addresses)
}

// listenAllOnOnePort listens on the http01Addresses addresses from 127.0.0.2
// on the port the first one got, or returns no listeners if that port is
// taken on one of the others.
func listenAllOnOnePort() ([]net.Listener, int, error) {
	first, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		return nil, 0, fmt.Errorf("bench acme: listening on 127.0.0.2: %w", err)
	}
	port := first.Addr().(*net.TCPAddr).Port
	lns := []net.Listener{first}
	for i := 3; i < 2+http01Addresses; i++ {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:%d", i, port))
		if err != nil {
			closeAll(lns)
			return nil, 0, nil
		}
		lns = append(lns, ln)
	}
	return lns, port, nil
}

func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		ln.Close()
	}
}

// WriteText prints r for people.
func (r ACMEResult) WriteText(w io.Writer) {
	fmt.Fprintf(w, "acme orders: %d in %.1fs at concurrency %d (%s): %.1f orders/s, p50 %.1f ms, p99 %.1f ms, %d errors\n",
		r.Orders, r.DurationSec, r.Concurrency, r.Store, r.PerSecond, r.P50Ms, r.P99Ms, r.Errors)
	if r.FirstError != "" {
		fmt.Fprintf(w, "first error: %s\n", r.FirstError)
	}
}
