package issuance

import (
	"fmt"
	"sort"

	zx509 "github.com/zmap/zcrypto/x509"
)

// LintCRL runs the CRL lints of mica's chosen registry (the same sources
// as for certificates) on a signed DER CRL. It returns a [*LintError] when
// any lint warns or errs.
func LintCRL(der []byte) error {
	ls, err := loadLints()
	if err != nil {
		return err
	}
	crl, err := zx509.ParseRevocationList(der)
	if err != nil {
		return fmt.Errorf("issuance: the linter cannot parse the CRL: %w", err)
	}
	lints := ls.registry.RevocationListLints().Lints()
	if len(lints) == 0 {
		return fmt.Errorf("issuance: the lint registry has no CRL lints: the zlint lint packages are not linked in")
	}
	var failures []LintFailure
	for _, l := range lints {
		failures = appendFailure(failures, l.Name, l.Execute(crl, ls.config))
	}
	return lintError(failures)
}

// CRLLintNames lists the CRL lints LintCRL runs, sorted.
func CRLLintNames() ([]string, error) {
	ls, err := loadLints()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, l := range ls.registry.RevocationListLints().Lints() {
		names = append(names, l.Name)
	}
	sort.Strings(names)
	return names, nil
}
