package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/csv"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/credential"
	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/keys/file"
)

// The files `mica cert issue` and `renew` write in --out: package
// credential's layout.
const (
	keyFile       = credential.KeyFile
	certFile      = credential.CertFile
	chainFile     = credential.ChainFile
	fullchainFile = credential.FullchainFile
	bundleFile    = credential.BundleFile
)

func runCertIssue(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "cert issue")
	var cf clientFlags
	cf.register(fs, env, false)
	tok := fs.String("token", env.getenv("MICA_TOKEN"), "one-time token from `mica token create` (env MICA_TOKEN)")
	tokFile := fs.String("token-file", "", "read the token from this file instead")
	out := fs.String("out", "", "directory to write key.pem, cert.pem, chain.pem, fullchain.pem, bundle.pem")
	keyType := fs.String("key-type", string(keys.Default), "key algorithm: ecdsa-p256, ecdsa-p384, ed25519, rsa-3072")
	ttl := fs.String("ttl", "", "requested lifetime (default: the profile's)")
	force := fs.Bool("force", false, "replace files already in --out")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if *tokFile != "" {
		b, err := os.ReadFile(*tokFile)
		if err != nil {
			return fmt.Errorf("reading token: %w", err)
		}
		*tok = strings.TrimSpace(string(b))
	}
	if *tok == "" || *out == "" {
		return usageError("cert issue needs --token (or --token-file) and --out")
	}
	alg, err := keys.ParseAlgorithm(*keyType)
	if err != nil {
		return usageError("%v", err)
	}
	if !*force && fileExists(filepath.Join(*out, keyFile)) {
		return fmt.Errorf("%s already holds a key: renew it with `mica cert renew`, or pass --force to replace it", *out)
	}
	c, err := clientForToken(ctx, &cf, *tok)
	if err != nil {
		return err
	}
	defer c.Close()
	key, csrPEM, err := newKeyAndCSR(alg)
	if err != nil {
		return err
	}
	resp, err := c.Enroll(ctx, *tok, client.CertificateRequest{CSR: csrPEM, TTL: *ttl})
	if err != nil {
		return err
	}
	if err := writeCredential(*out, key, resp); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "issued %s for %s (profile %s), valid until %s; wrote %s\n",
		resp.Serial, resp.Identity, resp.Profile, resp.NotAfter.Format(time.RFC3339), *out)
	return nil
}

// clientForToken makes the client for first contact: trusting --ca-file or
// the data directory's root when there is one, else the root the token
// pins (client.Bootstrap), for a machine that was handed only a token.
func clientForToken(ctx context.Context, cf *clientFlags, tok string) (*client.Client, error) {
	if cf.caFile != "" || fileExists(dataPaths{cf.dataDir}.rootCert()) {
		roots, err := cf.roots()
		if err != nil {
			return nil, err
		}
		return client.New(client.Config{Server: cf.server, Roots: roots})
	}
	return client.Bootstrap(ctx, client.Config{Server: cf.server}, tok)
}

func newKeyAndCSR(alg keys.Algorithm) (crypto.Signer, string, error) {
	key, err := keys.Generate(alg, rand.Reader)
	if err != nil {
		return nil, "", err
	}
	// The CSR names no identity: the token or the current certificate
	// decides it, and the server refuses a CSR that asks for anything else.
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, "", fmt.Errorf("making the CSR: %w", err)
	}
	return key, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}

// writeCredential writes the key and the certificates of resp to dir as
// one credential directory (package credential): the files switch
// together, so no reader sees a new certificate with an old key.
func writeCredential(dir string, key crypto.Signer, resp *client.CertificateResponse) error {
	chain, err := credential.ParseCertificates([]byte(resp.Certificate + "\n" + resp.Chain))
	if err != nil {
		return fmt.Errorf("the server's certificate: %w", err)
	}
	roots, err := credential.ParseCertificates([]byte(resp.Bundle))
	if err != nil {
		return fmt.Errorf("the server's trust bundle: %w", err)
	}
	c, err := credential.New(chain, key, roots)
	if err != nil {
		return err
	}
	return credential.Dir{Path: dir}.Write(c)
}

func runCertRenew(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "cert renew")
	var cf clientFlags
	cf.register(fs, env, true)
	out := fs.String("out", "", "directory to write the renewed files (default: the directory of --cert)")
	reuse := fs.Bool("reuse-key", false, "keep the current key instead of making a new one (no CSR is sent: the handshake proves the key)")
	keyType := fs.String("key-type", "", "algorithm of the new key (default: the current key's)")
	ttl := fs.String("ttl", "", "requested lifetime (default: the profile's)")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if cf.cert == "" || cf.key == "" {
		return usageError("cert renew needs --cert and --key")
	}
	if *out == "" {
		*out = filepath.Dir(cf.cert)
	}
	cred, err := loadHolderCredential(cf.cert, cf.key)
	if err != nil {
		return err
	}
	if cf.caFile == "" && fileExists(filepath.Join(filepath.Dir(cf.cert), bundleFile)) {
		cf.caFile = filepath.Join(filepath.Dir(cf.cert), bundleFile)
	}
	roots, err := cf.roots()
	if err != nil {
		return err
	}
	c, err := client.New(client.Config{Server: cf.server, Roots: roots, Certificate: cred})
	if err != nil {
		return err
	}
	defer c.Close()
	current := cred.PrivateKey.(crypto.Signer)
	var newKey crypto.Signer
	req := client.CertificateRequest{TTL: *ttl}
	if *reuse {
		// No CSR: the handshake with the current certificate proves the key.
		req.KeepKey = true
	} else {
		alg, err := keys.ParseAlgorithm(*keyType)
		if *keyType == "" {
			alg, err = keys.AlgorithmOf(current.Public())
		}
		if err != nil {
			return usageError("%v", err)
		}
		if newKey, req.CSR, err = newKeyAndCSR(alg); err != nil {
			return err
		}
	}
	resp, err := c.Renew(ctx, req)
	if err != nil {
		return err
	}
	if *reuse {
		newKey = current
	}
	if err := writeCredential(*out, newKey, resp); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "renewed %s as %s, valid until %s; wrote %s\n",
		leafSerial(cred), resp.Serial, resp.NotAfter.Format(time.RFC3339), *out)
	return nil
}

// loadHolderCredential loads a certificate (with chain.pem beside it, when
// the file holds the leaf alone, so the server sees the full chain) and its
// key, which only its owner may read.
func loadHolderCredential(certPath, keyPath string) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("reading certificate: %w", err)
	}
	chain, err := credential.ParseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certPath, err)
	}
	if more, err := os.ReadFile(filepath.Join(filepath.Dir(certPath), chainFile)); err == nil && len(chain) == 1 {
		if inter, err := credential.ParseCertificates(more); err == nil {
			chain = append(chain, inter...)
		}
	}
	key, err := file.LoadPlain(keyPath)
	if err != nil {
		return nil, err
	}
	c, err := credential.New(chain, key, nil)
	if err != nil {
		return nil, fmt.Errorf("%s and %s do not form a credential: %w", certPath, keyPath, err)
	}
	return c.TLSCertificate(), nil
}

func leafSerial(c *tls.Certificate) string {
	if c.Leaf != nil {
		return c.Leaf.SerialNumber.Text(16)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return "?"
	}
	return leaf.SerialNumber.Text(16)
}

func runCertList(ctx context.Context, env *cliEnv, args []string) error {
	fs, cf := apiFlags(env, "cert list")
	var f client.ListFilter
	source := fs.String("source", "issued", "issued (mica's inventory) or discovered (found deployed by `mica discover` and agents)")
	fs.StringVar(&f.Identity, "identity", "", "only this identity")
	fs.StringVar(&f.Profile, "profile", "", "only this profile (issued)")
	fs.StringVar(&f.Status, "status", "", "active, revoked or expired (issued)")
	fs.StringVar(&f.ExpiringWithin, "expiring-within", "", "only certificates expiring within this long, e.g. 7d")
	fs.IntVar(&f.Limit, "limit", 1000, "print at most this many, 0 for every one (when more match, it says how to list the next ones)")
	pageSize := fs.Int("page-size", 1000, "ask the server for this many at a time (1 to 10000)")
	fs.StringVar(&f.Cursor, "cursor", "", "start where an earlier `cert list` with the same filter stopped (it prints the value to pass)")
	var df client.DiscoveredFilter
	fs.StringVar(&df.Class, "class", "", "mica, external or self-signed (discovered)")
	fs.StringVar(&df.Finding, "finding", "", "only certificates with this finding, e.g. weak-key, missing-intermediate, expired (discovered)")
	fs.StringVar(&df.Owner, "owner", "", "only this owner (discovered)")
	fs.BoolVar(&df.IncludeGone, "include-gone", false, "also certificates no longer seen anywhere (discovered)")
	fs.BoolVar(&df.Sightings, "sightings", false, "list where each was seen (discovered)")
	output := fs.String("output", "table", "table, json or csv")
	c, err := cf.connect(env, fs, args)
	if err != nil {
		return err
	}
	defer c.Close()
	if *output != "table" && *output != "json" && *output != "csv" {
		return usageError("--output must be table, json or csv, not %q", *output)
	}
	if *source != "issued" && *source != "discovered" {
		return usageError("--source must be issued or discovered, not %q", *source)
	}
	if f.Limit < 0 {
		return usageError("--limit must be 0 (every one) or more, not %d", f.Limit)
	}
	if *pageSize < 1 || *pageSize > 10000 {
		return usageError("--page-size must be from 1 to 10000, not %d", *pageSize)
	}
	if *source == "discovered" {
		if f.Profile != "" || f.Status != "" || f.Cursor != "" {
			return usageError("--profile, --status and --cursor are for issued certificates; discovered ones have --class, --finding and --owner")
		}
		df.Identity, df.ExpiringWithin, df.Limit = f.Identity, f.ExpiringWithin, f.Limit
		certs, err := c.DiscoveredCertificates(ctx, df)
		if err != nil {
			return err
		}
		if err := printDiscovered(env.stdout, certs, *output, time.Now()); err != nil {
			return err
		}
		if f.Limit > 0 && len(certs) >= f.Limit {
			// Discovered certificates are paged by offset, up to the
			// server's largest page: say there may be more.
			fmt.Fprintf(env.stderr, "mica: listed the first %d discovered certificates; more may match: raise --limit (at most 10000) or narrow the filter\n", len(certs))
		}
		return nil
	}
	next, listed, err := listIssued(ctx, c, f, *pageSize, newCertPrinter(env.stdout, *output, time.Now()))
	if err != nil {
		return err
	}
	if next != "" {
		fmt.Fprintf(env.stderr, "mica: listed %d certificates (--limit %d) and more match: for the next ones, run the same command with --cursor %s (or --limit 0 for every one)\n", listed, f.Limit, next)
	}
	return nil
}

// listIssued prints the inventory in pages of pageSize from f.Cursor, at
// most f.Limit certificates (0: every one), and returns how many it
// printed and, when the limit cut the listing short, the cursor of the
// rest.
func listIssued(ctx context.Context, c *client.Client, f client.ListFilter, pageSize int, p *certPrinter) (next string, listed int, err error) {
	total := f.Limit
	for {
		f.Limit = pageSize
		if total > 0 {
			f.Limit = min(pageSize, total-listed)
		}
		page, err := c.ListCertificatesPage(ctx, f)
		if err != nil {
			// What was printed stays unterminated (a JSON array with no
			// end), so that no reader takes it for the whole listing.
			return "", listed, err
		}
		if err := p.write(page.Certificates); err != nil {
			return "", listed, err
		}
		listed += len(page.Certificates)
		if page.Next == "" || len(page.Certificates) == 0 {
			return "", listed, p.close()
		}
		if total > 0 && listed >= total {
			return page.Next, listed, p.close()
		}
		f.Cursor = page.Next
	}
}

// certPrinter writes inventory records as they arrive, a page at a time,
// as one document: a JSON array, a CSV file with one header, or a table
// (aligned within each page).
type certPrinter struct {
	w      io.Writer
	format string
	now    time.Time
	n      int
	csv    *csv.Writer
}

func newCertPrinter(w io.Writer, format string, now time.Time) *certPrinter {
	return &certPrinter{w: w, format: format, now: now}
}

func (p *certPrinter) write(certs []client.Certificate) error {
	switch p.format {
	case "json":
		// The same text as encoding the whole array with a two-space
		// indent, one element at a time.
		for _, c := range certs {
			b, err := json.MarshalIndent(c, "  ", "  ")
			if err != nil {
				return err
			}
			sep := ",\n  "
			if p.n == 0 {
				sep = "[\n  "
			}
			if _, err := fmt.Fprintf(p.w, "%s%s", sep, b); err != nil {
				return err
			}
			p.n++
		}
		return nil
	case "csv":
		if p.csv == nil {
			p.csv = csv.NewWriter(p.w)
			p.csv.Write([]string{"serial", "identity", "profile", "status", "not_before", "not_after", "fingerprint_sha256", "requester", "sans"})
		}
		for _, c := range certs {
			p.csv.Write([]string{c.Serial, c.Identity, c.Profile, displayStatus(c, p.now), c.NotBefore.Format(time.RFC3339),
				c.NotAfter.Format(time.RFC3339), c.Fingerprint, c.Requester, strings.Join(c.SANs, " ")})
		}
		p.n += len(certs)
		p.csv.Flush()
		return p.csv.Error()
	}
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	if p.n == 0 {
		fmt.Fprintln(tw, "SERIAL\tIDENTITY\tPROFILE\tSTATUS\tEXPIRES\tREMAINING")
	}
	for _, c := range certs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Serial, c.Identity, c.Profile, displayStatus(c, p.now),
			c.NotAfter.UTC().Format("2006-01-02 15:04"), remaining(c.NotAfter, p.now))
	}
	p.n += len(certs)
	return tw.Flush()
}

// close ends the document.
func (p *certPrinter) close() error {
	switch {
	case p.format == "json" && p.n == 0:
		_, err := io.WriteString(p.w, "[]\n")
		return err
	case p.format == "json":
		_, err := io.WriteString(p.w, "\n]\n")
		return err
	case p.n == 0:
		return p.write(nil) // the header alone
	}
	return nil
}

func displayStatus(c client.Certificate, now time.Time) string {
	if c.Status == "active" && now.After(c.NotAfter) {
		return "expired"
	}
	return c.Status
}

func remaining(notAfter, now time.Time) string {
	d := notAfter.Sub(now)
	if d <= 0 {
		return "expired " + humanDuration(-d) + " ago"
	}
	return humanDuration(d)
}

func humanDuration(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
	case d >= time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	case d >= time.Minute:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return d.Round(time.Second).String()
}

func runCertRevoke(ctx context.Context, env *cliEnv, args []string) error {
	fs, cf := apiFlags(env, "cert revoke")
	reason := fs.String("reason", "", "RFC 5280 reason: keyCompromise, superseded, cessationOfOperation, …")
	fp := fs.String("fingerprint", "", "revoke the certificate with this SHA-256 fingerprint (hex) instead of a serial")
	ident := fs.String("identity", "", "revoke every live certificate of this identity, in one transaction")
	c, err := cf.connect(env, fs, args)
	if err != nil {
		return err
	}
	defer c.Close()
	chosen := fs.NArg()
	if *fp != "" {
		chosen++
	}
	if *ident != "" {
		chosen++
	}
	if chosen != 1 || fs.NArg() > 1 {
		return usageError("cert revoke takes one SERIAL, or --fingerprint F, or --identity ID")
	}
	if _, err := client.ReasonCode(*reason); err != nil {
		return usageError("%v", err)
	}
	var recs []client.Certificate
	if fs.NArg() == 1 {
		rec, err := c.Revoke(ctx, fs.Arg(0), *reason)
		if err != nil {
			return err
		}
		recs = []client.Certificate{*rec}
	} else if recs, err = c.RevokeMatching(ctx, client.RevokeMatchingRequest{Fingerprint: *fp, Identity: *ident, Reason: *reason}); err != nil {
		return err
	}
	if len(recs) == 0 {
		fmt.Fprintf(env.stdout, "%s has no live certificate: nothing to revoke\n", *ident)
	}
	for _, rec := range recs {
		fmt.Fprintf(env.stdout, "revoked %s (%s), reason %s\n", rec.Serial, rec.Identity, rec.RevocationReason)
	}
	return nil
}

func runCertInspect(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "cert inspect")
	var cf clientFlags
	cf.register(fs, env, true)
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError("cert inspect takes one FILE or SERIAL")
	}
	arg := fs.Arg(0)
	var chain []*x509.Certificate
	var rec *client.Certificate
	if data, err := os.ReadFile(arg); err == nil {
		if chain, err = credential.ParseCertificates(data); err != nil {
			return fmt.Errorf("%s: %w", arg, err)
		}
		if len(chain) == 1 {
			if more, err := os.ReadFile(filepath.Join(filepath.Dir(arg), chainFile)); err == nil {
				if extra, err := credential.ParseCertificates(more); err == nil {
					chain = append(chain, extra...)
				}
			}
		}
		// The root, when the bundle beside the file holds it.
		if roots, err := os.ReadFile(filepath.Join(filepath.Dir(arg), bundleFile)); err == nil {
			if certs, err := credential.ParseCertificates(roots); err == nil {
				top := chain[len(chain)-1]
				for _, r := range certs {
					if !bytes.Equal(top.RawIssuer, top.RawSubject) && bytes.Equal(r.RawSubject, top.RawIssuer) && top.CheckSignatureFrom(r) == nil {
						chain = append(chain, r)
						break
					}
				}
			}
		}
		// Status is the server's to say; ask when a credential is at hand,
		// and say so when not.
		if c, err := cf.client(true); err == nil {
			rec, _ = c.Certificate(ctx, chain[0].SerialNumber.Text(16))
			c.Close()
		}
	} else {
		c, cerr := cf.client(true)
		if cerr != nil {
			return fmt.Errorf("%s is neither a readable file nor a serial the server could be asked about: %v", arg, cerr)
		}
		defer c.Close()
		if rec, err = c.Certificate(ctx, arg); err != nil {
			return err
		}
		if chain, err = credential.ParseCertificates([]byte(rec.PEM)); err != nil {
			return err
		}
	}
	return describe(env.stdout, chain, rec, time.Now())
}

func describe(w io.Writer, chain []*x509.Certificate, rec *client.Certificate, now time.Time) error {
	leaf := chain[0]
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	id, err := identity.FromCertificate(leaf)
	idText := id.String()
	if err != nil {
		idText = "(" + err.Error() + ")"
	}
	fmt.Fprintf(tw, "Identity:\t%s\n", idText)
	fmt.Fprintf(tw, "Serial:\t%s\n", leaf.SerialNumber.Text(16))
	fmt.Fprintf(tw, "Valid:\t%s → %s\n", leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(tw, "Lifetime:\t%s\n", humanDuration(leaf.NotAfter.Sub(leaf.NotBefore)))
	fmt.Fprintf(tw, "Remaining:\t%s\n", remaining(leaf.NotAfter, now))
	fmt.Fprintf(tw, "Key:\t%s\n", keyDescription(leaf.PublicKey))
	fmt.Fprintf(tw, "Usage:\t%s\n", ekuNames(leaf.ExtKeyUsage))
	fmt.Fprintf(tw, "Subject:\t%s\n", orDash(leaf.Subject.String()))
	for i, line := range issuerChain(chain) {
		label := "Issuer chain:"
		if i > 0 {
			label = ""
		}
		fmt.Fprintf(tw, "%s\t%s\n", label, line)
	}
	switch {
	case rec == nil:
		fmt.Fprintf(tw, "Status:\tunknown (server not asked: pass --cert/--key of an admin or the holder)\n")
	case rec.Status == "revoked":
		fmt.Fprintf(tw, "Status:\trevoked at %s (%s)\n", rec.RevokedAt.UTC().Format(time.RFC3339), rec.RevocationReason)
	default:
		fmt.Fprintf(tw, "Status:\t%s (profile %s, requested by %s, owner %s)\n", displayStatus(*rec, now), rec.Profile, rec.Requester, rec.Owner)
	}
	return tw.Flush()
}

// issuerChain describes the certificates above the leaf, each with its own
// expiry; an issuer that is not in the files is named without one.
func issuerChain(chain []*x509.Certificate) []string {
	var lines []string
	for _, c := range chain[1:] {
		lines = append(lines, fmt.Sprintf("%s  (expires %s)", c.Subject, c.NotAfter.UTC().Format("2006-01-02")))
	}
	if top := chain[len(chain)-1]; len(chain) == 1 || !bytes.Equal(top.RawIssuer, top.RawSubject) {
		lines = append(lines, fmt.Sprintf("%s  (not in the files; its expiry is unknown here)", top.Issuer))
	}
	return lines
}

func keyDescription(pub crypto.PublicKey) string {
	alg, err := keys.AlgorithmOf(pub)
	if err != nil {
		return fmt.Sprintf("%T", pub)
	}
	return string(alg)
}

func ekuNames(ekus []x509.ExtKeyUsage) string {
	var names []string
	for _, e := range ekus {
		switch e {
		case x509.ExtKeyUsageClientAuth:
			names = append(names, "clientAuth")
		case x509.ExtKeyUsageServerAuth:
			names = append(names, "serverAuth")
		default:
			names = append(names, fmt.Sprintf("eku(%d)", e))
		}
	}
	return orDash(strings.Join(names, ", "))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
