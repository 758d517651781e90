package issuance

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3/lint"
	"golang.org/x/crypto/cryptobyte"
	cryptobyte_asn1 "golang.org/x/crypto/cryptobyte/asn1"

	// The lint sources mica runs are imported one by one, not through the
	// zlint package, so the CA/Browser Forum, root-program and ETSI lints
	// are not even linked in.
	_ "github.com/zmap/zlint/v3/lints/community"
	_ "github.com/zmap/zlint/v3/lints/rfc"

	"github.com/mica-pki/mica/internal/keys"
)

// The lint selection. mica is a private PKI issuing SPIFFE X509-SVIDs and
// server certificates for internal names, so:
//
//   - Included: every certificate lint whose source is an IETF RFC that
//     governs certificate structure (RFC 5280 profile, RFC 3279/5480/8813
//     algorithms and key usage, RFC 5891 IDNA), plus the zlint community
//     lints (DN and SAN hygiene, RSA weak-key checks, validity sanity).
//   - Excluded sources: CA/Browser Forum (TLS, S/MIME, code signing, EV),
//     Mozilla, Apple and Chrome root programs and ETSI are rules for publicly
//     trusted certificates; they demand things a SPIFFE leaf must not have
//     (a subject CN, certificate policies, DNS-only SANs) and so flag valid
//     SVIDs. RFC 6962 lints concern Certificate Transparency precertificates,
//     which a private CA never makes. RFC 6960 lints are for OCSP responses.
//   - e_cert_issued_by_compromised_emudhra_ca is excluded everywhere: it
//     compares the issuer with the keys of one public CA that were
//     compromised, so it can never fire for a mica CA, and it costs about
//     4.5 ms per certificate, nearly all of the candidate set.
//   - e_ecdsa_small_private_key (a baby-step giant-step search for private
//     scalars up to 2^16) runs on CA certificates only. It was written after
//     CA keys were generated with tiny scalars; on a P-256 leaf it would
//     cost about 93 µs (more for the larger curves: generic big-integer
//     curve arithmetic), close to all the other leaf lints together, to catch a
//     client whose key generator is broken beyond anything a real library
//     does. CA certificates are signed a few times a year, so there it is
//     free.
//
// A leaf gets these lints in full only when its shape is new or its
// request values are not plain (shape.go); otherwise the shape's verdict
// stands.
//
// Measured in CPU time with BenchmarkLint, BenchmarkLintRegistry,
// BenchmarkZcryptoParse and BenchmarkEachLint (GOMAXPROCS=1) on a P-256
// SPIFFE leaf, 2-core x86-64 shared with other work (load average 15),
// Go 1.26, zlint v3.7.3: zlint in full takes about 0.17 ms per leaf, of
// which 0.04 ms is zcrypto's parse and 0.12 ms the leaf lints; the most
// expensive of those are e_cert_ext_invalid_der and
// e_ext_san_uri_host_not_fqdn_or_ip (about 7 µs each) and
// w_issuer_dn_leading_whitespace (4 µs), most others under 2 µs. zlint's
// whole global registry takes about 5.8 ms.
var (
	lintSources = lint.SourceList{
		lint.RFC3279,
		lint.RFC5280,
		lint.RFC5480,
		lint.RFC5891,
		lint.RFC8813,
		lint.Community,
	}
	lintExcluded = []string{
		"e_cert_issued_by_compromised_emudhra_ca",
	}
	lintCAOnly = []string{
		"e_ecdsa_small_private_key",
	}
)

// lintSet is the chosen registry, flattened so that linting one certificate
// is a loop over a slice with no per-call map or registry lookups.
type lintSet struct {
	registry lint.Registry
	leaf     []*lint.CertificateLint
	ca       []*lint.CertificateLint
	config   lint.Configuration
}

// loadLints builds the registry once per process: it is immutable after
// construction and every Issuer and CA operation uses the same one, which is
// what makes "CA certificates pass the same lints as leaves" true.
var loadLints = sync.OnceValues(func() (*lintSet, error) {
	reg, err := lint.GlobalRegistry().Filter(lint.FilterOptions{
		IncludeSources: lintSources,
		ExcludeNames:   lintExcluded,
	})
	if err != nil {
		return nil, fmt.Errorf("issuance: building the lint registry: %w", err)
	}
	ls := &lintSet{registry: reg, config: reg.GetConfiguration()}
	caOnly := make(map[string]bool, len(lintCAOnly))
	for _, n := range lintCAOnly {
		caOnly[n] = true
	}
	for _, l := range reg.CertificateLints().Lints() {
		ls.ca = append(ls.ca, l)
		if !caOnly[l.Name] {
			ls.leaf = append(ls.leaf, l)
		}
	}
	if len(ls.leaf) == 0 || len(ls.ca) != len(ls.leaf)+len(lintCAOnly) {
		return nil, fmt.Errorf("issuance: the lint registry is incomplete (%d leaf, %d CA lints): the zlint lint packages are not linked in", len(ls.leaf), len(ls.ca))
	}
	return ls, nil
})

// LintNames lists the lints mica runs on every certificate, sorted. CA
// certificates also get the ones in lint.go's lintCAOnly.
func LintNames() ([]string, error) {
	ls, err := loadLints()
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(ls.leaf))
	for _, l := range ls.leaf {
		names = append(names, l.Name)
	}
	sort.Strings(names)
	return names, nil
}

// LintFailure is one lint that did not pass.
type LintFailure struct {
	// Lint is the zlint name, e.g. "e_ext_key_usage_cert_sign_without_ca".
	Lint string
	// Status is "warn", "error" or "fatal" (the lint itself failed to run).
	Status string
	// Details is the lint's explanation, when it gave one.
	Details string
}

// LintError is returned when a certificate fails one or more lints. Nothing
// was signed. It means the request or the issuer configuration is wrong;
// retrying the same request gives the same result.
type LintError struct {
	Failures []LintFailure
}

func (e *LintError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "issuance: certificate refused by %d lint(s) before signing: ", len(e.Failures))
	for i, f := range e.Failures {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s (%s)", f.Lint, f.Status)
		if f.Details != "" {
			b.WriteString(": ")
			b.WriteString(f.Details)
		}
	}
	return b.String()
}

// lintDER runs the chosen lints on a DER certificate and returns its
// to-be-signed bytes.
func (ls *lintSet) lintDER(der []byte) ([]byte, error) {
	zc, err := zx509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("issuance: the linter cannot parse the certificate: %w", err)
	}
	lints := ls.leaf
	if zc.IsCA {
		lints = ls.ca
	}
	var failures []LintFailure
	for _, l := range lints {
		failures = appendFailure(failures, l.Name, l.Execute(zc, ls.config))
	}
	if err := lintError(failures); err != nil {
		return nil, err
	}
	return zc.RawTBSCertificate, nil
}

// appendFailure adds res to failures unless the lint passed or did not
// apply: a warning refuses like an error, since nothing reviews warnings
// between lint and signature.
func appendFailure(failures []LintFailure, name string, res *lint.LintResult) []LintFailure {
	var status string
	switch res.Status {
	case lint.Warn:
		status = "warn"
	case lint.Error:
		status = "error"
	case lint.Fatal:
		status = "fatal"
	default:
		return failures
	}
	return append(failures, LintFailure{Lint: name, Status: status, Details: res.Details})
}

// lintError is the [*LintError] for failures, sorted by lint name, or nil.
func lintError(failures []LintFailure) error {
	if failures == nil {
		return nil
	}
	sort.Slice(failures, func(i, j int) bool { return failures[i].Lint < failures[j].Lint })
	return &LintError{Failures: failures}
}

// Lint runs mica's lints on an already signed DER certificate. It returns
// a [*LintError] when any lint warns or errs.
func Lint(der []byte) error {
	ls, err := loadLints()
	if err != nil {
		return err
	}
	_, err = ls.lintDER(der)
	return err
}

// linter lints certificates before the real key signs them, the way
// Boulder does: crypto/x509 encodes the template, a throwaway key of the
// same algorithm as the issuer's signs that to-be-signed (TBS) encoding, the
// resulting certificate is linted, and only then does the real key sign
// the very same TBS bytes. The real signature therefore covers exactly what
// was linted, by construction rather than by re-encoding and comparing.
type linter struct {
	lints *lintSet
	// shapes, when set, lets a leaf of a shape already linted skip zlint
	// (shape.go); CA certificates, made by CheckAndSign, always get it.
	shapes *shapes
	// full counts the certificates zlint ran on, for tests.
	full atomic.Int64
	key  crypto.Signer
	// parent is the real issuer certificate with its public key swapped for
	// the throwaway key's, so crypto/x509 accepts the pair; the issuer name
	// and key identifier that go into the certificate are unchanged.
	parent *x509.Certificate

	// placeholder is a signature made once by the throwaway key. The lint
	// copy carries it instead of a fresh signature over its TBS: no lint
	// checks a signature's value (only its algorithm and encoding, which
	// are the same), and signing every lint copy cost as much as signing
	// the certificate itself.
	placeholderOnce sync.Once
	placeholder     []byte
	placeholderErr  error
}

// newLinter prepares a linter for certificates signed by a key of the same
// algorithm as issuerPub. A nil parent means self-signed certificates.
func newLinter(parent *x509.Certificate, issuerPub crypto.PublicKey, rand io.Reader) (*linter, error) {
	ls, err := loadLints()
	if err != nil {
		return nil, err
	}
	alg, err := keys.AlgorithmOf(issuerPub)
	if err != nil {
		return nil, fmt.Errorf("issuance: issuer key: %w", err)
	}
	key, err := lintKey(alg, rand)
	if err != nil {
		return nil, err
	}
	l := &linter{lints: ls, key: key}
	if parent != nil {
		cp := *parent
		cp.PublicKey = key.Public()
		l.parent = &cp
	}
	return l, nil
}

// lintKeys are the throwaway keys, one per algorithm for the process:
// they sign only lint copies, which are never published, so one of each
// is enough, and an RSA issuer does not generate an RSA key each time a
// CA certificate is made or an issuer is set up.
var lintKeys struct {
	sync.Mutex
	byAlg map[keys.Algorithm]crypto.Signer
}

func lintKey(alg keys.Algorithm, rand io.Reader) (crypto.Signer, error) {
	lintKeys.Lock()
	defer lintKeys.Unlock()
	if k := lintKeys.byAlg[alg]; k != nil {
		return k, nil
	}
	k, err := keys.Generate(alg, rand)
	if err != nil {
		return nil, fmt.Errorf("issuance: generating the lint key: %w", err)
	}
	if lintKeys.byAlg == nil {
		lintKeys.byAlg = map[keys.Algorithm]crypto.Signer{}
	}
	lintKeys.byAlg[alg] = k
	return k, nil
}

// tbs is a to-be-signed certificate and the signer options crypto/x509
// chose for it (the hash, or PSS parameters).
type tbs struct {
	raw  []byte
	opts crypto.SignerOpts
}

// check encodes template, gives it the throwaway key's placeholder signature, lints the result
// and returns the TBS bytes for the real key to sign.
func (l *linter) check(template *x509.Certificate, pub crypto.PublicKey, rand io.Reader) (tbs, error) {
	parent := l.parent
	if parent == nil {
		parent = template
	}
	// capture stops CreateCertificate at the point where it would sign, so
	// the encoding is done once, and neither the throwaway signature nor its
	// verification goes through crypto/x509's signing path.
	c := &capture{pub: l.key.Public()}
	if _, err := x509.CreateCertificate(rand, template, parent, pub, c); !errors.Is(err, errCaptured) {
		if err == nil {
			err = errors.New("internal error: the certificate was not captured")
		}
		return tbs{}, fmt.Errorf("issuance: building the certificate: %w", err)
	}
	t := tbs{raw: c.msg, opts: c.opts}
	var shape [sha256.Size]byte
	var notBefore time.Time
	plain := false
	if l.shapes != nil {
		shape, notBefore, plain = shapeOf(t.raw)
		if plain && l.shapes.known(shape, notBefore) {
			return t, nil
		}
	}
	l.placeholderOnce.Do(func() {
		l.placeholder, l.placeholderErr = crypto.SignMessage(l.key, rand, []byte("mica lint copy"), t.opts)
	})
	if l.placeholderErr != nil {
		return tbs{}, fmt.Errorf("issuance: signing the lint copy: %w", l.placeholderErr)
	}
	der, err := assemble(t.raw, l.placeholder)
	if err != nil {
		return tbs{}, err
	}
	l.full.Add(1)
	if _, err := l.lints.lintDER(der); err != nil {
		return tbs{}, err
	}
	if plain {
		l.shapes.add(shape, notBefore)
	}
	return t, nil
}

var errCaptured = errors.New("issuance: to-be-signed certificate captured")

// capture is a crypto.MessageSigner that records the message crypto/x509
// hands it and refuses to sign.
type capture struct {
	pub  crypto.PublicKey
	msg  []byte
	opts crypto.SignerOpts
}

func (c *capture) Public() crypto.PublicKey { return c.pub }

func (c *capture) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	// crypto/x509 uses SignMessage when a signer has it; reaching here means
	// it no longer does, and the TBS bytes were not seen.
	return nil, errors.New("issuance: internal error: crypto/x509 did not pass the whole message to the signer")
}

func (c *capture) SignMessage(_ io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	c.msg, c.opts = msg, opts
	return nil, errCaptured
}

// sign has the real key sign the linted TBS bytes, and checks the signature
// with the signer's public key as crypto/x509 would: a faulty signer (an HSM
// returning garbage) must not produce a certificate.
func sign(t tbs, signer crypto.Signer, rand io.Reader) (*x509.Certificate, error) {
	sig, err := crypto.SignMessage(signer, rand, t.raw, t.opts)
	if err != nil {
		return nil, fmt.Errorf("issuance: signing: %w", err)
	}
	der, err := assemble(t.raw, sig)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("issuance: parsing the signed certificate: %w", err)
	}
	verifier := &x509.Certificate{PublicKey: signer.Public()}
	if err := verifier.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		return nil, fmt.Errorf("issuance: the signer returned an invalid signature: %w", err)
	}
	return cert, nil
}

// assemble builds Certificate ::= SEQUENCE { tbsCertificate,
// signatureAlgorithm, signatureValue BIT STRING } (RFC 5280 4.1), taking the
// signature algorithm from the TBS so the two always agree.
func assemble(tbsDER, sig []byte) ([]byte, error) {
	in := cryptobyte.String(tbsDER)
	var body cryptobyte.String
	var algID cryptobyte.String
	if !in.ReadASN1(&body, cryptobyte_asn1.SEQUENCE) ||
		!body.SkipOptionalASN1(cryptobyte_asn1.Tag(0).Constructed().ContextSpecific()) ||
		!body.SkipASN1(cryptobyte_asn1.INTEGER) ||
		!body.ReadASN1Element(&algID, cryptobyte_asn1.SEQUENCE) {
		return nil, errors.New("issuance: internal error: malformed to-be-signed certificate")
	}
	var b cryptobyte.Builder
	b.AddASN1(cryptobyte_asn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbsDER)
		b.AddBytes(algID)
		b.AddASN1BitString(sig)
	})
	return b.Bytes()
}

// CheckAndSign lints a to-be-signed copy of template (signed with a
// throwaway key of the same algorithm as signer) and only then signs it with
// signer. parent nil means self-signed. It is how CA certificates are made,
// so they pass the same lints leaves do; a lint failure is a [*LintError].
func CheckAndSign(template, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer, rand io.Reader) (*x509.Certificate, error) {
	l, err := newLinter(parent, signer.Public(), rand)
	if err != nil {
		return nil, err
	}
	t, err := l.check(template, pub, rand)
	if err != nil {
		return nil, err
	}
	return sign(t, signer, rand)
}
