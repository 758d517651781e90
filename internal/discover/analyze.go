package discover

import (
	"bytes"
	//lint:ignore SA1019 DSA keys are judged here, never used: found on a host, they are weak by definition.
	"crypto/dsa"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/mica-pki/mica/identity"
)

// Finding is one problem of a sighting, as a stable slug: it is stored,
// shown, filtered on and used as a metric label, so the set is fixed.
type Finding string

const (
	// About the certificate, wherever it is seen.
	Expired       Finding = "expired"        // past NotAfter
	NotYetValid   Finding = "not-yet-valid"  // before NotBefore
	WeakKey       Finding = "weak-key"       // RSA under 2048 bits, ECDSA under 256, DSA
	WeakSignature Finding = "weak-signature" // MD5 or SHA-1 on the leaf or a presented intermediate
	SelfSigned    Finding = "self-signed"    // the leaf signed itself
	// MicaRevoked and MicaNotInInventory are added by the authority, which
	// holds the inventory: a mica certificate still deployed after its
	// revocation, and one that chains to mica but that mica never recorded.
	MicaRevoked        Finding = "mica-revoked"
	MicaNotInInventory Finding = "mica-not-in-inventory"

	// About this sighting.
	MissingIntermediate Finding = "missing-intermediate" // the presented chain does not reach a known root
	ChainExpired        Finding = "chain-expired"        // a presented intermediate is expired
	NameMismatch        Finding = "name-mismatch"        // the name the scan asked for is not in the leaf
	MicaMisplaced       Finding = "mica-misplaced"       // a mica certificate on a host its identity does not name
	KeyWorldReadable    Finding = "key-world-readable"   // the matching private key is readable by every user
	OldTLS              Finding = "old-tls"              // the endpoint negotiated TLS 1.1 or older
)

// Findings lists every finding, for metrics that must show zero series.
func Findings() []Finding {
	return []Finding{Expired, NotYetValid, WeakKey, WeakSignature, SelfSigned, MicaRevoked, MicaNotInInventory,
		MissingIntermediate, ChainExpired, NameMismatch, MicaMisplaced, KeyWorldReadable, OldTLS}
}

// Class is who issued a certificate, in the coarse classes operators
// watch and metrics are labelled by.
type Class string

const (
	ClassMica       Class = "mica"        // chains to one of mica's CAs
	ClassExternal   Class = "external"    // another CA
	ClassSelfSigned Class = "self-signed" // nobody but itself
)

// Classes lists every class.
func Classes() []Class { return []Class{ClassMica, ClassExternal, ClassSelfSigned} }

// Sighting is one certificate seen in one place, with what the scanner
// learnt there.
type Sighting struct {
	Location Location
	// Chain is what was presented (a TLS peer's certificates) or found next
	// to the leaf (the rest of a PEM bundle, a keystore entry's chain),
	// leaf first.
	Chain []*x509.Certificate
	// Addr is the address an endpoint was reached at.
	Addr netip.Addr
	// TLSVersion is what the endpoint negotiated (tls.VersionTLS13, …).
	TLSVersion uint16
	// HostNames are the names and addresses of the host a file is on.
	HostNames []identity.Name
	// Key is the private key file that matches the leaf, when one was
	// found.
	Key *Key
}

// Key is a private key file found next to a certificate. Its content is
// never kept or sent: only where it is and who can read it.
type Key struct {
	Path          string
	WorldReadable bool
}

// Analysis is the judgement of one sighting.
type Analysis struct {
	Class Class
	// Certificate holds the findings about the certificate itself;
	// Here those about this sighting of it.
	Certificate, Here []Finding
	// Details are sentences for people, one per finding that needs one.
	Details []string
}

// Analyzer judges sightings. Its roots decide what "complete chain" means:
// a chain is complete when it reaches a self-signed certificate, or a
// certificate issued by one of Roots.
type Analyzer struct {
	roots    map[string][]*x509.Certificate // by raw subject
	mica     map[string][]*x509.Certificate // mica's CA certificates, by raw subject
	micaRaw  map[string]bool                // mica's CA certificates, by DER
	now      func() time.Time
	minRSA   int
	minCurve int
}

// AnalyzerConfig configures an Analyzer.
type AnalyzerConfig struct {
	// Roots are the trust anchors chains should reach: mica's roots, the
	// system's, and any the operator adds.
	Roots []*x509.Certificate
	// Mica are mica's own CA certificates (roots and intermediates, past
	// and present): a leaf one of them issued is of ClassMica.
	Mica []*x509.Certificate
	// Clock is the time expiry is judged at; time.Now when nil.
	Clock func() time.Time
}

// NewAnalyzer returns an Analyzer.
func NewAnalyzer(cfg AnalyzerConfig) *Analyzer {
	a := &Analyzer{roots: map[string][]*x509.Certificate{}, mica: map[string][]*x509.Certificate{},
		micaRaw: map[string]bool{}, now: cfg.Clock, minRSA: 2048, minCurve: 256}
	if a.now == nil {
		a.now = time.Now
	}
	for _, c := range cfg.Roots {
		a.roots[string(c.RawSubject)] = append(a.roots[string(c.RawSubject)], c)
	}
	for _, c := range cfg.Mica {
		a.mica[string(c.RawSubject)] = append(a.mica[string(c.RawSubject)], c)
		a.micaRaw[string(c.Raw)] = true
		if c.IsCA && bytes.Equal(c.RawIssuer, c.RawSubject) {
			a.roots[string(c.RawSubject)] = append(a.roots[string(c.RawSubject)], c)
		}
	}
	return a
}

// Analyze judges one sighting. It needs at least the leaf.
func (a *Analyzer) Analyze(s Sighting) (Analysis, error) {
	if len(s.Chain) == 0 {
		return Analysis{}, fmt.Errorf("discover: sighting at %s has no certificate", s.Location)
	}
	var out Analysis
	add := func(list *[]Finding, f Finding, format string, args ...any) {
		if !slices.Contains(*list, f) {
			*list = append(*list, f)
		}
		if format != "" {
			out.Details = append(out.Details, fmt.Sprintf(format, args...))
		}
	}
	leaf, now := s.Chain[0], a.now()

	switch {
	case now.After(leaf.NotAfter):
		add(&out.Certificate, Expired, "")
	case now.Before(leaf.NotBefore):
		add(&out.Certificate, NotYetValid, "")
	}
	if why := weakKey(leaf.PublicKey, a.minRSA, a.minCurve); why != "" {
		add(&out.Certificate, WeakKey, "the key is %s", why)
	}
	selfSigned := isSelfSigned(leaf)
	if selfSigned {
		add(&out.Certificate, SelfSigned, "")
	}

	path, complete := a.buildChain(s.Chain, a.roots)
	for i, c := range path {
		if i > 0 && isSelfSigned(c) {
			break // a root's own signature is not what anyone checks
		}
		if weakSignature(c.SignatureAlgorithm) {
			if i == 0 {
				add(&out.Certificate, WeakSignature, "the certificate is signed with %s", c.SignatureAlgorithm)
			} else {
				add(&out.Here, WeakSignature, "intermediate %s is signed with %s", c.Subject, c.SignatureAlgorithm)
			}
		}
		if i > 0 && now.After(c.NotAfter) {
			add(&out.Here, ChainExpired, "intermediate %s expired at %s", c.Subject, c.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	// A file often holds the leaf alone, with the chain in another file;
	// only what an endpoint presents is the whole chain its clients get.
	if !complete && !selfSigned && s.Location.Scheme.Endpoint() {
		top := path[len(path)-1]
		add(&out.Here, MissingIntermediate, "the chain stops at %s, issued by %s, which was neither presented nor is a known root "+
			"(the server may lack an intermediate, or the root is one this server does not know)", describe(top), top.Issuer)
	}

	out.Class = ClassExternal
	switch {
	case a.isMica(s.Chain):
		out.Class = ClassMica
	case selfSigned:
		out.Class = ClassSelfSigned
	}

	if s.Location.Scheme.Endpoint() {
		a.judgeEndpoint(s, leaf, out.Class, add, &out)
	} else {
		if s.Key != nil && s.Key.WorldReadable {
			add(&out.Here, KeyWorldReadable, "its private key %s is readable by every user", s.Key.Path)
		}
		if out.Class == ClassMica {
			if names := hostNames(leaf); len(names) > 0 && !anyCovered(names, s.HostNames) {
				add(&out.Here, MicaMisplaced, "a mica certificate for %s is on host %s, which it does not name", strings.Join(nameStrings(names), ", "), s.Location.Host)
			}
		}
	}
	return out, nil
}

type addFunc = func(list *[]Finding, f Finding, format string, args ...any)

func (a *Analyzer) judgeEndpoint(s Sighting, leaf *x509.Certificate, class Class, add addFunc, out *Analysis) {
	if s.TLSVersion != 0 && s.TLSVersion < tls.VersionTLS12 {
		add(&out.Here, OldTLS, "the endpoint negotiated %s", tls.VersionName(s.TLSVersion))
	}
	names := hostNames(leaf)
	asked := s.Location.ServerName
	if asked == "" {
		asked = s.Location.Host
	}
	// A leaf that names only a SPIFFE ID is verified by its ID, not a host
	// name: its clients never ask whether it matches one.
	if len(names) > 0 || len(leaf.URIs) == 0 {
		if err := leaf.VerifyHostname(asked); err != nil {
			add(&out.Here, NameMismatch, "the scan asked for %s; the certificate names %s", asked, orNothing(nameStrings(names)))
		}
	}
	if class != ClassMica || len(names) == 0 {
		return
	}
	here := []identity.Name{}
	for _, h := range []string{s.Location.Host, s.Location.ServerName} {
		if n, err := identity.ParseName(h); err == nil && h != "" {
			here = append(here, n)
		}
	}
	if s.Addr.IsValid() {
		here = append(here, identity.IPName(s.Addr))
	}
	if !anyCovered(names, here) {
		add(&out.Here, MicaMisplaced, "a mica certificate for %s is served at %s, which it does not name", strings.Join(nameStrings(names), ", "), s.Location)
	}
}

// buildChain walks from the leaf to its issuers, choosing each parent
// among the presented certificates, then among anchors. It reports the
// path it found and whether it ends at a self-signed certificate or at one
// of anchors.
func (a *Analyzer) buildChain(presented []*x509.Certificate, anchors map[string][]*x509.Certificate) ([]*x509.Certificate, bool) {
	path := []*x509.Certificate{presented[0]}
	used := map[*x509.Certificate]bool{presented[0]: true}
	for len(path) <= 10 {
		cur := path[len(path)-1]
		if isSelfSigned(cur) {
			return path, true
		}
		var next *x509.Certificate
		for _, c := range presented[1:] {
			if !used[c] && issued(c, cur) {
				next = c
				break
			}
		}
		if next == nil {
			for _, c := range anchors[string(cur.RawIssuer)] {
				if issued(c, cur) {
					return append(path, c), true
				}
			}
			return path, false
		}
		used[next] = true
		path = append(path, next)
	}
	return path, false
}

// isMica reports whether one of mica's CAs issued the leaf, whether or not
// the chain was presented whole.
func (a *Analyzer) isMica(chain []*x509.Certificate) bool {
	if len(a.mica) == 0 {
		return false
	}
	path, _ := a.buildChain(chain, a.mica)
	for _, c := range path[1:] {
		if a.micaRaw[string(c.Raw)] {
			return true
		}
	}
	return false
}

// issued reports whether parent issued child: the names chain and the
// signature verifies. A signature Go no longer verifies (MD5, SHA-1) is
// matched by name and key identifier instead, so that a weak chain is
// still recognised as a chain (and flagged as weak).
func issued(parent, child *x509.Certificate) bool {
	if !bytes.Equal(parent.RawSubject, child.RawIssuer) {
		return false
	}
	if weakSignature(child.SignatureAlgorithm) {
		return parent.IsCA && (len(child.AuthorityKeyId) == 0 || bytes.Equal(child.AuthorityKeyId, parent.SubjectKeyId))
	}
	return child.CheckSignatureFrom(parent) == nil
}

func isSelfSigned(c *x509.Certificate) bool {
	if !bytes.Equal(c.RawIssuer, c.RawSubject) {
		return false
	}
	if weakSignature(c.SignatureAlgorithm) {
		return len(c.AuthorityKeyId) == 0 || bytes.Equal(c.AuthorityKeyId, c.SubjectKeyId)
	}
	return c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

func weakSignature(alg x509.SignatureAlgorithm) bool {
	switch alg {
	case x509.MD2WithRSA, x509.MD5WithRSA, x509.SHA1WithRSA, x509.DSAWithSHA1, x509.DSAWithSHA256, x509.ECDSAWithSHA1:
		return true
	}
	return false
}

// weakKey says why a public key is weak, or "" when it is not.
func weakKey(pub any, minRSA, minCurve int) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSA {
			return fmt.Sprintf("RSA-%d (under %d bits)", k.N.BitLen(), minRSA)
		}
	case *ecdsa.PublicKey:
		if k.Curve.Params().BitSize < minCurve {
			return fmt.Sprintf("ECDSA on %s (under %d bits)", k.Curve.Params().Name, minCurve)
		}
	case *dsa.PublicKey:
		return "DSA, which no current TLS stack should accept"
	case ed25519.PublicKey:
	case nil:
		return "of an algorithm Go cannot read"
	}
	return ""
}

// KeyType describes a public key in the words operators use:
// "ecdsa-p256", "rsa-2048", "ed25519".
func KeyType(pub any) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("rsa-%d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ecdsa-" + strings.ToLower(strings.ReplaceAll(k.Curve.Params().Name, "-", ""))
	case ed25519.PublicKey:
		return "ed25519"
	case *dsa.PublicKey:
		return fmt.Sprintf("dsa-%d", k.P.BitLen())
	}
	return "unknown"
}

// hostNames are the DNS names and IP addresses a certificate names, typed.
// DNS SANs that are not valid host names are left out: they can cover no
// host.
func hostNames(c *x509.Certificate) []identity.Name {
	var out []identity.Name
	for _, d := range c.DNSNames {
		if n, err := identity.DNSName(d); err == nil {
			out = append(out, n)
		}
	}
	for _, ip := range c.IPAddresses {
		if a, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, identity.IPName(a))
		}
	}
	return out
}

// anyCovered reports whether one of the certificate's names covers one of
// the host's: the same IP address, the same DNS name, or a wildcard for
// one label ("*.svc.example.org" covers "a.svc.example.org").
func anyCovered(certNames, host []identity.Name) bool {
	for _, c := range certNames {
		for _, h := range host {
			if covers(c, h) {
				return true
			}
		}
	}
	return false
}

func covers(cert, host identity.Name) bool {
	if cert.Kind() != host.Kind() {
		return false
	}
	if cert == host {
		return true
	}
	if cert.Kind() != identity.KindDNS {
		return false
	}
	suffix, ok := strings.CutPrefix(cert.String(), "*")
	if !ok {
		return false
	}
	label, rest, found := strings.Cut(host.String(), ".")
	return found && label != "" && "."+rest == suffix
}

// describe names a certificate in a sentence: its subject, or its
// display name when the subject is empty (as in SPIFFE leaves).
func describe(c *x509.Certificate) string {
	if len(c.Subject.Names) > 0 {
		return c.Subject.String()
	}
	return DisplayName(c)
}

func nameStrings(names []identity.Name) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = n.String()
	}
	return out
}

func orNothing(s []string) string {
	if len(s) == 0 {
		return "no host name"
	}
	return strings.Join(s, ", ")
}

// DisplayName is what a discovered certificate is filed under: its
// identity as mica reads identities when it has a valid one, else its
// first DNS SAN, else its subject's common name, else its subject.
func DisplayName(c *x509.Certificate) string {
	if id, err := identity.FromCertificate(c); err == nil && !id.IsZero() {
		return id.Primary()
	}
	switch {
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	case c.Subject.CommonName != "":
		return c.Subject.CommonName
	}
	return c.Subject.String()
}

// SANs lists a certificate's subject alternative names as text.
func SANs(c *x509.Certificate) []string {
	out := []string{}
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	out = append(out, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	return out
}
