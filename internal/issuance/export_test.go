package issuance

import "crypto/x509"

// Test-only access to internals.
var (
	LintSources  = lintSources
	LintExcluded = lintExcluded
	LintCAOnly   = lintCAOnly
)

// SetTemplateHook makes iss call f on every template just before linting,
// so tests can provoke lint failures.
func SetTemplateHook(iss *Issuer, f func(*x509.Certificate)) { iss.hook = f }
