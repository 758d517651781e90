// Package tlsscan finds the certificates TLS endpoints present: it expands
// hosts, networks and ports into targets ([Spec]), connects to each with
// bounded concurrency and rate, speaks STARTTLS first where the protocol
// begins in plain text (SMTP, IMAP, PostgreSQL), completes enough of a
// handshake to see the certificate chain, and reports what it saw
// ([Result]). It verifies nothing: judging what was seen is package
// discover's job.
//
// Start with [Spec] and [Scan].
package tlsscan

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"iter"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Outcome is how probing one target ended.
type Outcome string

const (
	// OutcomeTLS: the endpoint presented a certificate.
	OutcomeTLS Outcome = "tls"
	// OutcomeClosed: nothing listens (the connection was refused).
	OutcomeClosed Outcome = "closed"
	// OutcomeNoCertificate: something answered but presented no
	// certificate: not TLS, STARTTLS refused, or a TLS alert first.
	OutcomeNoCertificate Outcome = "no-certificate"
	// OutcomeTimeout: no answer within the timeout.
	OutcomeTimeout Outcome = "timeout"
	// OutcomeError: any other failure (name not found, unreachable,
	// connection reset).
	OutcomeError Outcome = "error"
)

// Definite reports whether the outcome says for sure what the endpoint
// serves now. Only then may a certificate seen there before be recorded
// as gone: a timeout or a reset says nothing about it.
func (o Outcome) Definite() bool {
	return o == OutcomeTLS || o == OutcomeClosed || o == OutcomeNoCertificate
}

// Result is what probing one target found.
type Result struct {
	Target  Target
	Outcome Outcome
	// Addr is the address connected to.
	Addr netip.Addr
	// Chain is what the endpoint presented, leaf first (OutcomeTLS).
	Chain      []*x509.Certificate
	TLSVersion uint16
	// Err says what went wrong, for every outcome but OutcomeTLS and
	// OutcomeClosed.
	Err error
}

// Config tunes a scan. Every zero value is a safe default.
type Config struct {
	// Concurrency is how many targets are probed at once; default 64.
	Concurrency int
	// Rate caps new connections per second; zero is no cap.
	Rate float64
	// Timeout bounds each target, from dialling to the end of the
	// handshake; default 5s.
	Timeout time.Duration
	// Dial connects; a net.Dialer when nil.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Skip, when set, leaves out targets it returns true for (those a
	// resumed scan finished before).
	Skip func(Target) bool
	// ClientName is what STARTTLS exchanges call this client (SMTP EHLO);
	// default "mica-discover.invalid".
	ClientName string
}

// Scan probes every target and calls fn with each result, from the
// calling goroutine (fn needs no locking). It returns when every target
// was probed, when fn returns an error (which Scan returns), or when ctx
// ends (ctx.Err()). Probes in flight when it stops are abandoned.
func Scan(ctx context.Context, cfg Config, targets iter.Seq[Target], fn func(Result) error) error {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 64
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Dial == nil {
		cfg.Dial = (&net.Dialer{}).DialContext
	}
	if cfg.ClientName == "" {
		cfg.ClientName = "mica-discover.invalid"
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	work := make(chan Target)
	results := make(chan Result)
	var workers sync.WaitGroup
	for range cfg.Concurrency {
		workers.Go(func() {
			for t := range work {
				r := probe(ctx, cfg, t)
				select {
				case results <- r:
				case <-ctx.Done():
					return
				}
			}
		})
	}
	go func() {
		defer func() {
			close(work)
			workers.Wait()
			close(results)
		}()
		p := pacer{rate: cfg.Rate}
		for t := range targets {
			if cfg.Skip != nil && cfg.Skip(t) {
				continue
			}
			if err := p.wait(ctx); err != nil {
				return
			}
			select {
			case work <- t:
			case <-ctx.Done():
				return
			}
		}
	}()
	for r := range results {
		if err := fn(r); err != nil {
			cancel()
			for range results { // let the workers end
			}
			return err
		}
	}
	return ctx.Err()
}

// pacer spaces events rate per second apart.
type pacer struct {
	rate float64
	next time.Time
}

func (p *pacer) wait(ctx context.Context) error {
	if p.rate <= 0 {
		return ctx.Err()
	}
	now := time.Now()
	if p.next.Before(now) {
		p.next = now
	}
	d := p.next.Sub(now)
	p.next = p.next.Add(time.Duration(float64(time.Second) / p.rate))
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// allCipherSuites lets the probe see endpoints that still offer only old
// suites: it only looks at the certificate and sends nothing secret.
var allCipherSuites = func() []uint16 {
	var ids []uint16
	for _, s := range tls.CipherSuites() {
		ids = append(ids, s.ID)
	}
	for _, s := range tls.InsecureCipherSuites() {
		ids = append(ids, s.ID)
	}
	return ids
}()

func probe(ctx context.Context, cfg Config, t Target) Result {
	r := Result{Target: t}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	conn, err := cfg.Dial(ctx, "tcp", net.JoinHostPort(t.Host, strconv.Itoa(t.Port)))
	if err != nil {
		r.Outcome, r.Err = classify(err)
		return r
	}
	defer conn.Close()
	if ap, err := netip.ParseAddrPort(conn.RemoteAddr().String()); err == nil {
		r.Addr = ap.Addr().Unmap()
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	// Closing the connection when ctx ends unblocks a STARTTLS read.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := startTLS(conn, t.Scheme, cfg.ClientName); err != nil {
		r.Outcome, r.Err = classify(err)
		return r
	}
	var seen *tls.ConnectionState
	tc := tls.Client(conn, &tls.Config{
		ServerName: t.sni(),
		// The probe verifies nothing on purpose: it records what is
		// presented, valid or not, and sends nothing that needs trust.
		InsecureSkipVerify: true,
		MinVersion:         tls.VersionTLS10,
		CipherSuites:       allCipherSuites,
		VerifyConnection: func(cs tls.ConnectionState) error {
			seen = &cs
			return nil
		},
	})
	err = tc.HandshakeContext(ctx)
	// A server that wants a client certificate may end the handshake
	// after presenting its own: what was seen is what matters.
	if seen != nil && len(seen.PeerCertificates) > 0 {
		r.Outcome, r.Chain, r.TLSVersion = OutcomeTLS, seen.PeerCertificates, seen.Version
		return r
	}
	if err == nil {
		err = errors.New("tlsscan: the handshake completed without a certificate")
	}
	r.Outcome, r.Err = classify(err)
	return r
}

// errNoCertificate marks a failure that proves the endpoint presents no
// certificate to this scan (a plain-text service, a refused STARTTLS).
var errNoCertificate = errors.New("no certificate")

func classify(err error) (Outcome, error) {
	var (
		alert  tls.AlertError
		header tls.RecordHeaderError
		netErr net.Error
	)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return OutcomeClosed, nil
	case errors.Is(err, errNoCertificate), errors.As(err, &alert), errors.As(err, &header):
		return OutcomeNoCertificate, err
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &netErr) && netErr.Timeout():
		return OutcomeTimeout, err
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return OutcomeError, fmt.Errorf("tlsscan: the endpoint closed the connection: %w", err)
	}
	return OutcomeError, err
}
