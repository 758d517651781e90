package client

import (
	"fmt"
	"strings"
)

// reasonNames are the RFC 5280 CRLReason names, indexed by code. Code 7 is
// unused by the RFC; certificateHold is refused by mica (a revocation here
// is final), but the name is kept so records read back correctly.
var reasonNames = []string{
	"unspecified", "keyCompromise", "cACompromise", "affiliationChanged", "superseded",
	"cessationOfOperation", "certificateHold", "", "removeFromCRL", "privilegeWithdrawn", "aACompromise",
}

// ReasonCode maps an RFC 5280 reason name (case-insensitive) to its code.
// An empty name is unspecified (0).
func ReasonCode(name string) (int, error) {
	if name == "" {
		return 0, nil
	}
	for code, n := range reasonNames {
		if n != "" && strings.EqualFold(n, name) {
			return code, nil
		}
	}
	return 0, fmt.Errorf("mica: unknown revocation reason %q: use one of %s", name, strings.Join(validReasons(), ", "))
}

// ReasonName maps a code back to its RFC 5280 name.
func ReasonName(code int) string {
	if code >= 0 && code < len(reasonNames) && reasonNames[code] != "" {
		return reasonNames[code]
	}
	return fmt.Sprintf("reason-%d", code)
}

func validReasons() []string {
	var out []string
	for _, n := range reasonNames {
		if n != "" && n != "certificateHold" && n != "removeFromCRL" {
			out = append(out, n)
		}
	}
	return out
}
