package pkcs11

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Scheme starts every key URI of this package (RFC 7512).
const Scheme = "pkcs11:"

// URI names one key in one token: the token's label, and the key's
// CKA_ID and CKA_LABEL. ID alone finds the key; Object is for people.
type URI struct {
	Token  string
	Object string
	ID     []byte
}

// String is the RFC 7512 form, with the ID percent-encoded byte by byte.
func (u URI) String() string {
	var b strings.Builder
	b.WriteString(Scheme)
	b.WriteString("token=")
	b.WriteString(escape(u.Token))
	if u.Object != "" {
		b.WriteString(";object=")
		b.WriteString(escape(u.Object))
	}
	if len(u.ID) > 0 {
		b.WriteString(";id=")
		for _, c := range u.ID {
			fmt.Fprintf(&b, "%%%02x", c)
		}
	}
	return b.String()
}

// escape percent-encodes what RFC 7512's pchar does not allow in a path
// attribute value.
func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~:[]@!$'()*+,=&", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// ParseURI reads a key URI written by [URI.String] (or by another tool that
// names token, object and/or id; other attributes are refused rather than
// ignored, so a URI never finds a different key than its writer meant).
func ParseURI(s string) (URI, error) {
	rest, ok := strings.CutPrefix(s, Scheme)
	if !ok {
		return URI{}, fmt.Errorf("keys/pkcs11: %q is not a pkcs11: URI", s)
	}
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		return URI{}, fmt.Errorf("keys/pkcs11: %q has query attributes (such as a PIN), which mica does not read from URIs: put the PIN in the config", s)
	}
	var u URI
	seen := map[string]bool{}
	for _, attr := range strings.Split(rest, ";") {
		if attr == "" {
			continue
		}
		name, value, ok := strings.Cut(attr, "=")
		if !ok {
			return URI{}, fmt.Errorf("keys/pkcs11: attribute %q in %q has no value", attr, s)
		}
		if seen[name] {
			return URI{}, fmt.Errorf("keys/pkcs11: attribute %q appears twice in %q", name, s)
		}
		seen[name] = true
		v, err := url.PathUnescape(value)
		if err != nil {
			return URI{}, fmt.Errorf("keys/pkcs11: attribute %q in %q: %w", name, s, err)
		}
		switch name {
		case "token":
			u.Token = v
		case "object":
			u.Object = v
		case "id":
			u.ID = []byte(v)
		default:
			return URI{}, fmt.Errorf("keys/pkcs11: attribute %q in %q is not one mica reads (token, object, id)", name, s)
		}
	}
	if u.Token == "" || (len(u.ID) == 0 && u.Object == "") {
		return URI{}, errors.New("keys/pkcs11: a key URI needs the token and the key's id or object label")
	}
	return u, nil
}
