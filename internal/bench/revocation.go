package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
	xocsp "golang.org/x/crypto/ocsp"

	"github.com/mica-pki/mica/internal/api"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/procmem"
	"github.com/mica-pki/mica/revocation"
)

// benchAdmin revokes in the benchmarks.
var benchAdmin = authority.Principal{Name: authority.SystemPrincipal}

// enroll issues n certificates through the authority, as machines would.
func enroll(ctx context.Context, s *Server, n int) ([]*authority.Issued, error) {
	csrs, err := csrPool(keys.Default, nil)
	if err != nil {
		return nil, err
	}
	ts := &tokenSource{minter: s.Minter}
	var out []*authority.Issued
	for i := range n {
		tok, err := ts.mint()
		if err != nil {
			return nil, err
		}
		iss, err := s.Authority.Enroll(ctx, authority.EnrollRequest{Token: tok, CSR: csrs[i%len(csrs)], Source: netip.MustParseAddr("127.0.0.1")})
		if err != nil {
			return nil, err
		}
		out = append(out, iss)
	}
	return out, nil
}

// RevocationResult is what `mica bench revocation` reports.
type RevocationResult struct {
	Store        string  `json:"store"`
	Subscribers  int     `json:"subscribers"`
	Revocations  int     `json:"revocations"`
	Deliveries   int     `json:"deliveries"`
	ConnectSec   float64 `json:"connect_all_seconds"`
	P50Ms        float64 `json:"p50_ms"`
	P99Ms        float64 `json:"p99_ms"`
	MaxMs        float64 `json:"max_ms"`
	Missing      int     `json:"missing_deliveries"`
	PeakRSSBytes int64   `json:"peak_rss_bytes"`
	Note         string  `json:"note"`
}

// Revocation measures the push feed: subscribers connect over mTLS, then
// certificates are revoked one at a time, and each delivery's latency is
// taken from the store's commit to the event's arrival in the subscriber.
// s needs its revocation outputs (Options.Revocation).
func Revocation(ctx context.Context, s *Server, subscribers, revocations int) (RevocationResult, error) {
	res := RevocationResult{Store: s.Store, Subscribers: subscribers, Revocations: revocations,
		Note: "latency is from the store's commit of each revocation to its arrival in each subscriber's Set, over loopback mTLS; revocations one at a time"}
	// The moment the store commits a revocation, the authority fires this
	// hook: that is the start of the measured propagation.
	var committed atomic.Int64
	s.OnRevocation(func() { committed.Store(time.Now().UnixNano()) })
	url, stop, err := serveTLS(s, api.New(api.Config{Authority: s.Authority, TrustDomain: "example.org", Feed: s.Feed}))
	if err != nil {
		return res, err
	}
	defer stop()
	roots := x509.NewCertPool()
	roots.AddCert(s.Root)
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, Certificates: []tls.Certificate{s.Admin}}

	certs, err := enroll(ctx, s, revocations)
	if err != nil {
		return res, err
	}
	var mu sync.Mutex
	var lat []time.Duration
	var got, ready atomic.Int64
	allReady := make(chan struct{})
	delivered := make(chan struct{}, 1)
	subCtx, cancelSubs := context.WithCancel(ctx)
	defer cancelSubs()
	start := time.Now()
	for range subscribers {
		sub, err := revocation.NewSubscriber(revocation.Config{URL: url + "/v1/revocations/feed", TLS: tlsCfg,
			OnReset: func(revocation.SnapshotInfo) {
				if ready.Add(1) == int64(subscribers) {
					close(allReady)
				}
			},
			OnEvent: func(revocation.Event) {
				d := time.Duration(time.Now().UnixNano() - committed.Load())
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
				got.Add(1)
				select {
				case delivered <- struct{}{}:
				default:
				}
			}})
		if err != nil {
			return res, err
		}
		go sub.Run(subCtx)
	}
	select {
	case <-allReady:
	case <-time.After(2 * time.Minute):
		return res, fmt.Errorf("bench: only %d of %d subscribers connected in 2 minutes", ready.Load(), subscribers)
	case <-ctx.Done():
		return res, ctx.Err()
	}
	res.ConnectSec = time.Since(start).Seconds()
	for i, iss := range certs {
		want := int64(subscribers) * int64(i+1)
		if _, err := s.Authority.Revoke(ctx, benchAdmin, iss.Record.Serial, 1, netip.Addr{}); err != nil {
			return res, err
		}
		// One revocation at a time: wait until every subscriber has it, or
		// 10 s (what is still missing then is reported as missing).
		timeout := time.NewTimer(10 * time.Second)
	wait:
		for got.Load() < want {
			select {
			case <-delivered:
			case <-timeout.C:
				break wait
			case <-ctx.Done():
				timeout.Stop()
				return res, ctx.Err()
			}
		}
		timeout.Stop()
	}
	mu.Lock()
	slices.Sort(lat)
	res.Deliveries, res.Missing = len(lat), subscribers*revocations-len(lat)
	res.P50Ms, res.P99Ms = Ms(Percentile(lat, 0.50)), Ms(Percentile(lat, 0.99))
	if len(lat) > 0 {
		res.MaxMs = Ms(lat[len(lat)-1])
	}
	mu.Unlock()
	_, res.PeakRSSBytes = procmem.Read()
	return res, nil
}

// WriteText prints r for people.
func (r RevocationResult) WriteText(w io.Writer) {
	fmt.Fprintf(w, "revocation feed (%s): %d subscribers connected in %.1fs; %d revocations, %d deliveries (%d missing)\n",
		r.Store, r.Subscribers, r.ConnectSec, r.Revocations, r.Deliveries, r.Missing)
	fmt.Fprintf(w, "commit → subscriber: p50 %.2f ms, p99 %.2f ms, max %.2f ms; peak RSS %d MiB\n",
		r.P50Ms, r.P99Ms, r.MaxMs, r.PeakRSSBytes>>20)
	fmt.Fprintln(w, r.Note)
}

// OCSPResult is what `mica bench ocsp` reports.
type OCSPResult struct {
	Store        string  `json:"store"`
	Concurrency  int     `json:"concurrency"`
	Certificates int     `json:"certificates"`
	Nonce        bool    `json:"nonce"`
	DurationSec  float64 `json:"duration_seconds"`
	Requests     int     `json:"requests"`
	Errors       int     `json:"errors"`
	PerSecond    float64 `json:"requests_per_second"`
	P50Ms        float64 `json:"p50_ms"`
	P99Ms        float64 `json:"p99_ms"`
	Note         string  `json:"note"`
}

// OCSPConfig is one `mica bench ocsp` run.
type OCSPConfig struct {
	Concurrency int
	Duration    time.Duration
	// Certificates are asked about, a tenth of them revoked.
	Certificates int
	// Nonce sends a nonce with every request, so each answer is signed for it.
	Nonce bool
}

// OCSP measures the OCSP responder over loopback HTTP. s needs its
// revocation outputs (Options.Revocation).
func OCSP(ctx context.Context, s *Server, cfg OCSPConfig) (OCSPResult, error) {
	res := OCSPResult{Store: s.Store, Concurrency: cfg.Concurrency, Certificates: cfg.Certificates, Nonce: cfg.Nonce,
		Note: "POST over loopback HTTP/1.1 from this process; client and server share the CPUs"}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	srv := &http.Server{Handler: s.Revocations, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	url := "http://" + ln.Addr().String() + s.OCSPPath
	certs, err := enroll(ctx, s, cfg.Certificates)
	if err != nil {
		return res, err
	}
	var reqs [][]byte
	for i, iss := range certs {
		if i%10 == 0 {
			if _, err := s.Authority.Revoke(ctx, benchAdmin, iss.Record.Serial, 1, netip.Addr{}); err != nil {
				return res, err
			}
		}
		der, err := xocsp.CreateRequest(iss.Certificate, s.Intermediate, nil)
		if err != nil {
			return res, err
		}
		if cfg.Nonce {
			der = ocspRequestWithNonce(der)
		}
		reqs = append(reqs, der)
	}
	httpc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Concurrency * 2}}
	post := func(der []byte) error {
		resp, err := httpc.Post(url, "application/ocsp-request", bytes.NewReader(der))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 || len(body) < 100 {
			return fmt.Errorf("ocsp answered %s, %d bytes", resp.Status, len(body))
		}
		return nil
	}
	// Warm the cache the way real traffic does: the first request for a
	// certificate signs, every later one is served from the cache.
	for _, r := range reqs {
		if err := post(r); err != nil {
			return res, err
		}
	}
	start := time.Now()
	lat, failed, _ := Loop(ctx, cfg.Concurrency, cfg.Duration, func(w, i int) error { return post(reqs[(w+i)%len(reqs)]) })
	elapsed := time.Since(start)
	slices.Sort(lat)
	res.DurationSec, res.Requests, res.Errors = elapsed.Seconds(), len(lat), failed
	res.PerSecond = float64(len(lat)) / elapsed.Seconds()
	res.P50Ms, res.P99Ms = Ms(Percentile(lat, 0.5)), Ms(Percentile(lat, 0.99))
	return res, nil
}

// WriteText prints r for people.
func (r OCSPResult) WriteText(w io.Writer) {
	fmt.Fprintf(w, "ocsp (%s, nonce %v): %d requests in %.1fs with %d in flight: %.0f requests/s, p50 %.2f ms, p99 %.2f ms, %d errors\n",
		r.Store, r.Nonce, r.Requests, r.DurationSec, r.Concurrency, r.PerSecond, r.P50Ms, r.P99Ms, r.Errors)
	fmt.Fprintln(w, r.Note)
}

// ocspRequestWithNonce re-encodes a one-certificate request with a random
// 16-byte nonce extension (id-pkix-ocsp-nonce, RFC 8954).
func ocspRequestWithNonce(der []byte) []byte {
	in := cryptobyte.String(der)
	var outer, tbs cryptobyte.String
	if !in.ReadASN1(&outer, cbasn1.SEQUENCE) || !outer.ReadASN1(&tbs, cbasn1.SEQUENCE) {
		return der
	}
	nonce := make([]byte, 16)
	rand.Read(nonce)
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddBytes(tbs)
			b.AddASN1(cbasn1.Tag(2).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1ObjectIdentifier(asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 2})
						b.AddASN1(cbasn1.OCTET_STRING, func(b *cryptobyte.Builder) { b.AddASN1OctetString(nonce) })
					})
				})
			})
		})
	})
	out, err := b.Bytes()
	if err != nil {
		return der
	}
	return out
}
