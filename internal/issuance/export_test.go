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

// FullLints counts the certificates iss ran zlint on.
func FullLints(iss *Issuer) int64 { return iss.linter.full.Load() }

// Plain forms of request values (shape.go).
var (
	PlainDNSName  = plainDNSName
	PlainSPIFFEID = plainSPIFFEID
)
