package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	xacme "golang.org/x/crypto/acme"

	"github.com/mica-pki/mica/internal/acme"
	"github.com/mica-pki/mica/internal/keys"
)

// benchACMEResult is what `mica bench acme` prints.
type benchACMEResult struct {
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

// runBenchACME measures complete ACME orders with a standard Go client
// (golang.org/x/crypto/acme) against an in-process server on loopback: new
// order → authorization → http-01 challenge, validated by the server over
// HTTP → finalize → download, each order its own round trips and
// validation. Accounts are registered and keys made before the clock starts.
func runBenchACME(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "bench acme")
	concurrency := fs.Int("concurrency", 16, "orders in flight")
	duration := fs.Duration("duration", 10*time.Second, "how long to measure")
	db := fs.String("db", "", "postgres:// URL (default: SQLite in a temporary directory)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if *concurrency < 1 || *duration <= 0 {
		return usageError("--concurrency must be at least 1 and --duration positive")
	}
	tuneGC(env)
	p, cleanup, err := benchInProcess(ctx, *db)
	if err != nil {
		return err
	}
	defer cleanup()

	// The http-01 responder: what a client's web server would serve.
	var answers sync.Map
	// The order is for 127.0.0.2, not 127.0.0.1: the server's own names
	// (server_names) are reserved and never issued to an ACME account.
	httpLn, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		return err
	}
	defer httpLn.Close()
	go http.Serve(httpLn, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v, ok := answers.Load(r.URL.Path); ok {
			fmt.Fprint(w, v)
			return
		}
		http.NotFound(w, r)
	}))

	certs, err := newServerCertificate(ctx, p, []string{"127.0.0.1"}, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	apiLn, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: certs.get})
	if err != nil {
		return err
	}
	defer apiLn.Close()
	srv, err := acme.New(acme.Config{Authority: p.authority, Store: p.store.(acme.Store), Settings: acme.Settings{
		Profile: "server", URL: "https://" + apiLn.Addr().String() + acme.Prefix, HTTP01Port: httpLn.Addr().(*net.TCPAddr).Port,
		OrdersPerAccountPerHour: 1 << 30, OrdersPerIdentifierPerHour: 1 << 30,
	}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	go http.Serve(apiLn, srv.Handler())

	roots := x509.NewCertPool()
	roots.AddCert(p.hierarchy.Root)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, MaxIdleConnsPerHost: *concurrency}}
	dirURL := "https://" + apiLn.Addr().String() + "/acme/directory"
	clients := make([]*xacme.Client, *concurrency)
	for i := range clients {
		key, err := keys.Generate(keys.Default, rand.Reader)
		if err != nil {
			return err
		}
		clients[i] = &xacme.Client{Key: key, DirectoryURL: dirURL, HTTPClient: hc}
		if _, err := clients[i].Register(ctx, &xacme.Account{}, xacme.AcceptTOS); err != nil {
			return fmt.Errorf("bench acme: registering an account: %w", err)
		}
	}
	csrs := make([][]byte, 256)
	for i := range csrs {
		key, err := keys.Generate(keys.Default, rand.Reader)
		if err != nil {
			return err
		}
		if csrs[i], err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 2)}}, key); err != nil {
			return err
		}
	}

	order := func(ctx context.Context, c *xacme.Client, csr []byte) error {
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

	var done, failed atomic.Int64
	var firstErr atomic.Value
	var mu sync.Mutex
	var lat []time.Duration
	runCtx, cancel := context.WithTimeout(ctx, *duration)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			for n := i; runCtx.Err() == nil; n += len(clients) {
				t0 := time.Now()
				err := order(runCtx, c, csrs[n%len(csrs)])
				if runCtx.Err() != nil {
					return
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				done.Add(1)
				mu.Lock()
				lat = append(lat, time.Since(t0))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	res := benchACMEResult{Store: storeName(*db, ""), Concurrency: *concurrency, DurationSec: elapsed.Seconds(),
		Orders: int(done.Load()), Errors: int(failed.Load()), PerSecond: float64(done.Load()) / elapsed.Seconds(),
		P50Ms: ms(percentile(lat, 0.50)), P99Ms: ms(percentile(lat, 0.99)),
		Note: "in-process server and client on one machine; each order: newOrder, authz, http-01 validated over loopback, finalize, download"}
	if v, ok := firstErr.Load().(string); ok {
		res.FirstError = v
	}
	if *asJSON {
		return json.NewEncoder(env.stdout).Encode(res)
	}
	fmt.Fprintf(env.stdout, "acme orders: %d in %.1fs at concurrency %d (%s): %.1f orders/s, p50 %.1f ms, p99 %.1f ms, %d errors\n",
		res.Orders, res.DurationSec, res.Concurrency, res.Store, res.PerSecond, res.P50Ms, res.P99Ms, res.Errors)
	if res.FirstError != "" {
		fmt.Fprintf(env.stdout, "first error: %s\n", res.FirstError)
	}
	return nil
}
