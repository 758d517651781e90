package authority

import (
	"crypto/x509"
	"math/big"
	"strings"
)

// maxSerialText bounds a serial as written by a person or a tool: 20 octets
// (RFC 5280 §4.1.2.2) as colon-separated hex is 59 characters.
const maxSerialText = 64

// ParseSerial reads a certificate serial number the ways people and tools
// write it — mica's lower-case hex ("1a2b"), openssl's upper case with a
// leading zero ("01A2B"), or colon-separated octets ("01:A2:B0") — and
// returns it as mica writes it (SerialHex): lower-case hex without leading
// zeros. Every operation that takes a serial canonicalizes it here first,
// so that a holder asking about its own certificate in another spelling is
// still recognised as the holder.
func ParseSerial(s string) (string, error) {
	t := strings.TrimSpace(s)
	if len(t) == 0 || len(t) > maxSerialText {
		return "", newError(KindInvalid, nil, "serial %q is not a certificate serial number: write it in hex, like 1a2b or 01:A2:B0", shortText(s))
	}
	t = strings.TrimPrefix(strings.TrimPrefix(t, "0x"), "0X")
	t = strings.ReplaceAll(t, ":", "")
	n, ok := new(big.Int).SetString(t, 16)
	if !ok || n.Sign() < 0 || t == "" || n.BitLen() > 160 {
		return "", newError(KindInvalid, nil, "serial %q is not a certificate serial number: write it in hex (at most 20 octets), like 1a2b or 01:A2:B0", shortText(s))
	}
	return n.Text(16), nil
}

// SerialHex is how mica writes a serial number: lower-case hex.
func SerialHex(c *x509.Certificate) string { return c.SerialNumber.Text(16) }

func shortText(s string) string {
	if len(s) > maxSerialText {
		return s[:maxSerialText] + "…"
	}
	return s
}
