package issuance

import (
	"fmt"
	"sort"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3/lint"
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
		res := l.Execute(crl, ls.config)
		var status string
		switch res.Status {
		case lint.Warn:
			status = "warn"
		case lint.Error:
			status = "error"
		case lint.Fatal:
			status = "fatal"
		default:
			continue
		}
		failures = append(failures, LintFailure{Lint: l.Name, Status: status, Details: res.Details})
	}
	if failures != nil {
		sort.Slice(failures, func(i, j int) bool { return failures[i].Lint < failures[j].Lint })
		return &LintError{Failures: failures}
	}
	return nil
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
