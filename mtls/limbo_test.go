package mtls_test

import (
	"compress/gzip"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mica-pki/mica/identity"
	"github.com/mica-pki/mica/mtls"
)

// limboCase is one case of the x509-limbo corpus, with the fields used.
type limboCase struct {
	ID                     string     `json:"id"`
	Features               []string   `json:"features"`
	Description            string     `json:"description"`
	ValidationKind         string     `json:"validation_kind"`
	TrustedCerts           []string   `json:"trusted_certs"`
	UntrustedIntermediates []string   `json:"untrusted_intermediates"`
	PeerCertificate        string     `json:"peer_certificate"`
	ValidationTime         *time.Time `json:"validation_time"`
	KeyUsage               []string   `json:"key_usage"`
	ExtendedKeyUsage       []string   `json:"extended_key_usage"`
	ExpectedResult         string     `json:"expected_result"`
	ExpectedPeerName       *struct {
		Kind  string `json:"kind"`
		Value string `json:"value"`
	} `json:"expected_peer_name"`
	ExpectedPeerNames []struct {
		Kind  string `json:"kind"`
		Value string `json:"value"`
	} `json:"expected_peer_names"`
	MaxChainDepth *int     `json:"max_chain_depth"`
	CRLs          []string `json:"crls"`
}

// Features of the corpus whose cases mica does not promise to answer as
// the corpus does, and why. docs/verifier.md says the same.
var limboDeclined = map[string]string{
	"pedantic-webpki-eku":              "web PKI rule; mica refuses critical and anyExtendedKeyUsage EKUs and EKUs in anchors (see the rules), but a leaf without EKU is the caller's choice",
	"pedantic-webpki-subscriber-key":   "web PKI subscriber key rules (P-192, DSA, small RSA) are applied to every certificate, so these pass; declined as a class",
	"pedantic-serial-number":           "applied (serial-not-positive, serial-too-long); declined as a class",
	"pedantic-public-suffix-wildcard":  "mica matches names exactly and never wildcards, so the public suffix list has no role",
	"pedantic-rfc5280":                 "applied where listed; declined as a class",
	"name-constraint-dn":               "directoryName constraints: mica identities are SAN names, subjects are not read",
	"has-policy-constraints":           "certificate policies are not processed (mica issues none)",
	"max-chain-depth":                  "no depth limit beyond the CAs' pathLenConstraint",
	"rfc5280-incompatible-with-webpki": "where RFC 5280 and the web PKI disagree (non-critical name constraints), mica follows the web PKI: the constraints are enforced either way",
}

// limboRules are cases that test one rule of the Verifier's (see
// docs/verifier.md) on certificates made by others: that rule must be what
// refuses them.
var limboRules = map[string]string{
	"webpki::aki::root-with-aki-all-fields":                      "aki-issuer-serial",
	"rfc5280::aki::leaf-missing-aki":                             "aki-missing",
	"rfc5280::aki::intermediate-missing-aki":                     "aki-missing",
	"webpki::aki::root-with-aki-missing-keyidentifier":           "aki-no-key-id",
	"webpki::aki::root-with-aki-ski-mismatch":                    "aki-ski-mismatch",
	"webpki::eku::root-has-eku":                                  "anchor-eku",
	"rfc5280::root-non-critical-basic-constraints":               "ca-basic-constraints-noncritical",
	"rfc5280::root-inconsistent-ca-extensions":                   "ca-without-key-cert-sign",
	"webpki::cn::not-in-san":                                     "cn-not-in-san",
	"webpki::cn::ipv6-uppercase-mismatch":                        "cn-not-in-san",
	"webpki::eku::ee-anyeku":                                     "ee-any-eku",
	"webpki::eku::ee-critical-eku":                               "ee-critical-eku",
	"webpki::ee-basicconstraints-ca":                             "ee-is-ca",
	"rfc5280::leaf-ku-keycertsign":                               "ee-key-cert-sign",
	"rfc5280::nc::not-allowed-in-ee-noncritical":                 "ee-name-constraints",
	"rfc5280::eku::ee-eku-empty":                                 "eku-empty",
	"rfc5280::ca-empty-subject":                                  "empty-issuer",
	"rfc5280::san::noncritical-with-empty-subject":               "empty-subject-noncritical-san",
	"webpki::forbidden-dsa-leaf":                                 "key-algorithm",
	"rfc5280::pc::ica-noncritical-pc":                            "policy-constraints-noncritical",
	"webpki::forbidden-rsa-not-divisible-by-8-in-root":           "rsa-key-not-multiple-of-8",
	"webpki::forbidden-weak-rsa-key-in-root":                     "rsa-key-too-small",
	"webpki::san::san-critical-with-nonempty-subject":            "san-critical-with-subject",
	"rfc5280::serial::zero":                                      "serial-not-positive",
	"rfc5280::serial::too-long":                                  "serial-too-long",
	"rfc5280::ski::root-missing-ski":                             "ski-missing",
	"rfc5280::ski::intermediate-missing-ski":                     "ski-missing",
	"pathological::pathological-chain-same-subject-distinct-key": "too-many-certificates",
	"pathological::nc-dos-1":                                     "too-many-names",
	"rfc5280::unknown-critical-extension-intermediate":           "unknown-critical-extension",
	"rfc5280::unknown-critical-extension-root":                   "unknown-critical-extension",
	"webpki::v1-cert":                                            "version-not-3",
}

// limboLoad reads the corpus from testdata.
func limboLoad(t *testing.T) []limboCase {
	t.Helper()
	f, err := os.Open("testdata/x509-limbo/limbo.json.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Testcases []limboCase `json:"testcases"`
	}
	if err := json.NewDecoder(zr).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	return doc.Testcases
}

func parsePEMCert(s string) (*x509.Certificate, error) {
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		return nil, errors.New("no PEM block")
	}
	return x509.ParseCertificate(b.Bytes)
}

func parsePEMCerts(ss []string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for _, s := range ss {
		c, err := parsePEMCert(s)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

var limboEKU = map[string]x509.ExtKeyUsage{"serverAuth": x509.ExtKeyUsageServerAuth, "clientAuth": x509.ExtKeyUsageClientAuth,
	"codeSigning": x509.ExtKeyUsageCodeSigning, "emailProtection": x509.ExtKeyUsageEmailProtection,
	"timeStamping": x509.ExtKeyUsageTimeStamping, "OCSPSigning": x509.ExtKeyUsageOCSPSigning, "anyExtendedKeyUsage": x509.ExtKeyUsageAny}

func (c limboCase) usages() []x509.ExtKeyUsage {
	if len(c.ExtendedKeyUsage) == 0 {
		return []x509.ExtKeyUsage{x509.ExtKeyUsageAny}
	}
	var out []x509.ExtKeyUsage
	for _, u := range c.ExtendedKeyUsage {
		out = append(out, limboEKU[u])
	}
	return out
}

func (c limboCase) now() time.Time {
	if c.ValidationTime != nil {
		return *c.ValidationTime
	}
	return time.Now()
}

// runMica runs the case through mtls.Verifier as a service would be
// configured for it: the trust anchors, the usage, the peer's expected name
// as an exact, typed name, and the CRLs loaded, with the hard-fail policy.
func (c limboCase) runMica() error {
	roots, err := parsePEMCerts(c.TrustedCerts)
	if err != nil {
		return fmt.Errorf("trusted certificate: %w", err)
	}
	inter, err := parsePEMCerts(c.UntrustedIntermediates)
	if err != nil {
		return fmt.Errorf("intermediate: %w", err)
	}
	leaf, err := parsePEMCert(c.PeerCertificate)
	if err != nil {
		return fmt.Errorf("peer certificate: %w", err)
	}
	now := c.now()
	cfg := mtls.VerifierConfig{Roots: mtls.StaticRoots(roots...), Usages: c.usages(), Now: func() time.Time { return now },
		Authorize: mtls.AuthorizeFunc(func(identity.Identity) bool { return true })}
	if p := c.ExpectedPeerName; p != nil {
		cfg.Authorize = mtls.AuthorizeIDs(p.Value)
	}
	for _, p := range c.ExpectedPeerNames {
		if p.Kind == "RFC822" {
			return errors.New("e-mail identities are not mica identities")
		}
	}
	if len(c.CRLs) > 0 {
		checker, err := mtls.NewCRLChecker(mtls.CRLConfig{Roots: func() []*x509.Certificate { return roots }})
		if err != nil {
			return err
		}
		for _, s := range c.CRLs {
			b, _ := pem.Decode([]byte(s))
			if b == nil {
				return errors.New("CRL: no PEM block")
			}
			checker.Load(b.Bytes) // an invalid CRL is refused and reported; the policy decides
		}
		cfg.CRL, cfg.CRLPolicy = checker, mtls.CRLHardFail
	}
	v, err := mtls.NewVerifier(cfg)
	if err != nil {
		return err
	}
	_, err = v.Verify(append([]*x509.Certificate{leaf}, inter...), mtls.VerifyOptions{})
	return err
}

// runX509 runs the case through crypto/x509 alone: Verify, then the host
// name check for a DNS or IP name. It has no CRL support.
func (c limboCase) runX509() error {
	roots, err := parsePEMCerts(c.TrustedCerts)
	if err != nil {
		return err
	}
	inter, err := parsePEMCerts(c.UntrustedIntermediates)
	if err != nil {
		return err
	}
	leaf, err := parsePEMCert(c.PeerCertificate)
	if err != nil {
		return err
	}
	opts := x509.VerifyOptions{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool(), CurrentTime: c.now(), KeyUsages: c.usages()}
	for _, r := range roots {
		opts.Roots.AddCert(r)
	}
	for _, i := range inter {
		opts.Intermediates.AddCert(i)
	}
	if _, err := leaf.Verify(opts); err != nil {
		return err
	}
	if p := c.ExpectedPeerName; p != nil && (p.Kind == "DNS" || p.Kind == "IP") {
		return leaf.VerifyHostname(p.Value)
	}
	return nil
}

type limboTally struct{ correct, falseAccept, falseReject int }

func (t *limboTally) add(expectSuccess bool, err error) string {
	switch {
	case expectSuccess == (err == nil):
		t.correct++
		return "ok"
	case err == nil:
		t.falseAccept++
		return "false accept"
	default:
		t.falseReject++
		return "false reject"
	}
}

// limboExplained reads the cases docs/verifier.md explains: every line of
// its tables that starts with a case id in backquotes.
func limboExplained(t *testing.T) map[string]bool {
	t.Helper()
	doc, err := os.ReadFile("../docs/verifier.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z0-9:._-]+)`").FindAllStringSubmatch(string(doc), -1) {
		out[m[1]] = true
	}
	return out
}

// TestLimbo runs every case of the x509-limbo corpus through mtls.Verifier
// and through crypto/x509, prints the comparison, and holds mica to: no
// false accept outside the features it declines, fewer wrong answers than
// crypto/x509, and every other disagreement explained in docs/verifier.md.
func TestLimbo(t *testing.T) {
	cases := limboLoad(t)
	explained := limboExplained(t)
	var mica, std limboTally
	var unexplained, falseAccepts []string
	byClass := map[string]*[2]limboTally{}
	for _, c := range cases {
		expect := c.ExpectedResult == "SUCCESS"
		micaErr, stdErr := c.runMica(), c.runX509()
		m, s := mica.add(expect, micaErr), std.add(expect, stdErr)
		class, _, _ := strings.Cut(c.ID, "::")
		if byClass[class] == nil {
			byClass[class] = &[2]limboTally{}
		}
		byClass[class][0].add(expect, micaErr)
		byClass[class][1].add(expect, stdErr)
		declined := ""
		for _, f := range c.Features {
			if limboDeclined[f] != "" {
				declined = f
			}
		}
		if want, ok := limboRules[c.ID]; ok {
			var rej *mtls.RejectError
			if !errors.As(micaErr, &rej) || rej.Rule != want {
				t.Errorf("%s: refused by %s, want rule %s", c.ID, limboWhy(micaErr), want)
			}
		}
		if m != "ok" || s != "ok" {
			t.Logf("%-66s expect %-7s mica %-13s crypto/x509 %-13s %s %s", c.ID, c.ExpectedResult, m, s, declined, limboWhy(micaErr))
		}
		switch {
		case m == "false accept" && declined == "":
			falseAccepts = append(falseAccepts, c.ID)
		case m == "false reject" && !explained[c.ID]:
			unexplained = append(unexplained, c.ID)
		}
	}
	classes := make([]string, 0, len(byClass))
	for k := range byClass {
		classes = append(classes, k)
	}
	sort.Strings(classes)
	var b strings.Builder
	fmt.Fprintf(&b, "x509-limbo, %d cases\n%-14s %28s   %28s\n%-14s %8s %9s %9s   %8s %9s %9s\n", len(cases), "", "mtls.Verifier", "crypto/x509",
		"class", "correct", "false acc", "false rej", "correct", "false acc", "false rej")
	for _, k := range append(classes, "total") {
		tl := byClass[k]
		if k == "total" {
			tl = &[2]limboTally{mica, std}
		}
		fmt.Fprintf(&b, "%-14s %8d %9d %9d   %8d %9d %9d\n", k, tl[0].correct, tl[0].falseAccept, tl[0].falseReject,
			tl[1].correct, tl[1].falseAccept, tl[1].falseReject)
	}
	fmt.Fprintf(&b, "wrong answers: mtls.Verifier %d, crypto/x509 %d", mica.falseAccept+mica.falseReject, std.falseAccept+std.falseReject)
	t.Log("\n" + b.String())
	if len(falseAccepts) > 0 {
		t.Errorf("false accepts outside the declined features: %s", strings.Join(falseAccepts, ", "))
	}
	if len(unexplained) > 0 {
		slices.Sort(unexplained)
		t.Errorf("false rejects not explained in docs/verifier.md: %s", strings.Join(unexplained, ", "))
	}
	if mica.falseAccept+mica.falseReject >= std.falseAccept+std.falseReject {
		t.Errorf("mtls.Verifier gives %d wrong answers, crypto/x509 %d: it must give fewer",
			mica.falseAccept+mica.falseReject, std.falseAccept+std.falseReject)
	}
}

// limboWhy is the reason (and rule) of a refusal, or the error's start.
func limboWhy(err error) string {
	var rej *mtls.RejectError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &rej) && rej.Rule != "":
		return string(rej.Reason) + "/" + rej.Rule
	case errors.As(err, &rej):
		return string(rej.Reason)
	}
	s := err.Error()
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}
