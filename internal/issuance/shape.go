package issuance

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"sort"
	"sync"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cryptobyte_asn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Every leaf mica signs is made by the same template code from a few
// request values: the subject key, the names, the validity and, through
// policy, the extended key usages. Everything else — issuer, extensions,
// their order, encoding and criticality — follows from the issuing CA and
// from which kinds of values the request brought. So zlint's verdict on a
// leaf is decided by two things: its shape (the to-be-signed certificate
// with the request's values masked) and whether those values are well
// formed.
//
// The linter therefore runs zlint in full on the first leaf of each shape
// and remembers the shape. A later leaf of a remembered shape skips zlint
// only if each of its request values has one of the plain forms below,
// read back from its own encoding: DNS names of lower-case LDH labels
// (no punycode), SPIFFE IDs whose path segments use the SPIFFE characters
// (the scheme and trust domain are part of the shape), IPv4 or IPv6
// addresses, an ECDSA or Ed25519 key, a positive validity written as
// RFC 5280 says. Anything else — an RSA key, an internationalised or
// upper-case name, a URI of another form, any extension or encoding the
// shape has not seen — gets zlint in full, so a defect is refused exactly
// as before. TestPlainFormsPassZlint generates plain names and keys and
// checks that zlint passes every one of them.
//
// BenchmarkPrepare measures validate, template, encode and lint of a P-256
// SPIFFE leaf in CPU time (2-core x86-64 shared with other work, load
// average 15, Go 1.26, zlint v3.7.3): 33 µs for a remembered shape, 194 µs
// with zlint in full.

// shapeCacheSize bounds the shapes remembered. Real deployments have a
// handful (issuer × key type × usages × kinds and number of names); when
// full, the cache starts over.
const shapeCacheSize = 4096

// shapes remembers the shapes whose first leaf passed zlint.
type shapes struct {
	// changes are the dates on which a lint of the set starts or stops
	// applying (zlint compares them with NotBefore), sorted: a shape
	// linted before such a date is linted again after it.
	changes []time.Time
	mu      sync.Mutex
	// passed maps a shape to the first NotBefore at which its verdict
	// may differ.
	passed map[[sha256.Size]byte]time.Time
}

func newShapes(ls *lintSet) *shapes {
	s := &shapes{passed: map[[sha256.Size]byte]time.Time{}}
	for _, l := range ls.leaf {
		for _, d := range []time.Time{l.EffectiveDate, l.IneffectiveDate} {
			if !d.IsZero() {
				s.changes = append(s.changes, d)
			}
		}
	}
	sort.Slice(s.changes, func(i, j int) bool { return s.changes[i].Before(s.changes[j]) })
	return s
}

// known reports whether a leaf of shape key with NotBefore nb needs no
// zlint run of its own.
func (s *shapes) known(key [sha256.Size]byte, nb time.Time) bool {
	s.mu.Lock()
	until, ok := s.passed[key]
	s.mu.Unlock()
	return ok && nb.Before(until)
}

// add remembers that the leaf of shape key with NotBefore nb passed.
func (s *shapes) add(key [sha256.Size]byte, nb time.Time) {
	until := time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	if i := sort.Search(len(s.changes), func(i int) bool { return s.changes[i].After(nb) }); i < len(s.changes) {
		until = s.changes[i]
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.passed) >= shapeCacheSize {
		clear(s.passed)
	}
	s.passed[key] = until
}

// shapeOf reads a DER TBSCertificate and returns its shape, its NotBefore
// and whether every request value in it has a plain form. ok is false
// when the certificate is not a leaf as mica makes them (RSA key, unusual
// names, anything unexpected): such a certificate is always linted.
func shapeOf(tbs []byte) (key [sha256.Size]byte, notBefore time.Time, ok bool) {
	// Each piece is written with its kind and length, so that no two
	// different sequences of pieces hash alike: 'e' for a DER element or
	// string kept as it is, 'm' for what is kept of a masked value.
	h := sha256.New()
	put := func(kind byte, b []byte) {
		var hdr [5]byte
		hdr[0] = kind
		binary.BigEndian.PutUint32(hdr[1:], uint32(len(b)))
		h.Write(hdr[:])
		h.Write(b)
	}
	w := shapeWriter{
		element: func(b []byte) { put('e', b) },
		masked:  func(b ...byte) { put('m', b) },
	}

	in := cryptobyte.String(tbs)
	var body, version, serial, sigAlg, issuer, validity, subject, spki cryptobyte.String
	if !in.ReadASN1(&body, cryptobyte_asn1.SEQUENCE) || !in.Empty() ||
		!body.ReadASN1Element(&version, cryptobyte_asn1.Tag(0).Constructed().ContextSpecific()) ||
		!body.ReadASN1(&serial, cryptobyte_asn1.INTEGER) ||
		!body.ReadASN1Element(&sigAlg, cryptobyte_asn1.SEQUENCE) ||
		!body.ReadASN1Element(&issuer, cryptobyte_asn1.SEQUENCE) ||
		!body.ReadASN1(&validity, cryptobyte_asn1.SEQUENCE) ||
		!body.ReadASN1Element(&subject, cryptobyte_asn1.SEQUENCE) ||
		!body.ReadASN1(&spki, cryptobyte_asn1.SEQUENCE) {
		return key, notBefore, false
	}
	w.element(version)
	// The serial: its length and sign are shape, its value is mica's.
	if len(serial) == 0 || len(serial) > 20 || serial[0]&0x80 != 0 {
		return key, notBefore, false
	}
	w.masked(byte(len(serial)), b2b(serial[0] == 0))
	w.element(sigAlg)
	w.element(issuer)
	var nbOK, naOK bool
	var notAfter time.Time
	notBefore, nbOK = w.time(&validity)
	notAfter, naOK = w.time(&validity)
	if !nbOK || !naOK || !validity.Empty() || !notAfter.After(notBefore) {
		return key, notBefore, false
	}
	w.element(subject)
	if !w.key(spki) {
		return key, notBefore, false
	}
	// Only extensions may follow: unique identifiers are not plain.
	var exts cryptobyte.String
	if !body.ReadASN1(&exts, cryptobyte_asn1.Tag(3).Constructed().ContextSpecific()) || !body.Empty() ||
		!exts.ReadASN1(&exts, cryptobyte_asn1.SEQUENCE) {
		return key, notBefore, false
	}
	for !exts.Empty() {
		var raw, ext, id, value cryptobyte.String
		if !exts.ReadASN1Element(&raw, cryptobyte_asn1.SEQUENCE) {
			return key, notBefore, false
		}
		ext = raw
		if !ext.ReadASN1(&ext, cryptobyte_asn1.SEQUENCE) || !ext.ReadASN1(&id, cryptobyte_asn1.OBJECT_IDENTIFIER) {
			return key, notBefore, false
		}
		critical := false
		if ext.PeekASN1Tag(cryptobyte_asn1.BOOLEAN) && !ext.ReadASN1Boolean(&critical) {
			return key, notBefore, false
		}
		if !ext.ReadASN1(&value, cryptobyte_asn1.OCTET_STRING) || !ext.Empty() {
			return key, notBefore, false
		}
		switch {
		case bytes.Equal(id, oidSubjectAltName):
			w.masked('S', b2b(critical))
			if !w.names(value) {
				return key, notBefore, false
			}
		case bytes.Equal(id, oidSubjectKeyID):
			// A hash of the key: its length is shape.
			var kid cryptobyte.String
			if !value.ReadASN1(&kid, cryptobyte_asn1.OCTET_STRING) || !value.Empty() || len(kid) == 0 || len(kid) > 64 {
				return key, notBefore, false
			}
			w.masked('K', b2b(critical), byte(len(kid)))
		default:
			w.element(raw)
		}
	}
	h.Sum(key[:0])
	return key, notBefore, true
}

// The contents of the OBJECT IDENTIFIERs shapeOf looks for.
var (
	oidSubjectAltName = []byte{0x55, 0x1d, 0x11}                         // 2.5.29.17
	oidSubjectKeyID   = []byte{0x55, 0x1d, 0x0e}                         // 2.5.29.14
	oidECPublicKey    = []byte{0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01} // 1.2.840.10045.2.1
	oidEd25519        = []byte{0x2b, 0x65, 0x70}                         // 1.3.101.112
)

func b2b(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// shapeWriter feeds the shape hash: element keeps a piece as it is,
// masked keeps only what is given of a request value.
type shapeWriter struct {
	element func([]byte)
	masked  func(...byte)
}

// time reads one Time of a Validity: UTCTime YYMMDDHHMMSSZ, or
// GeneralizedTime YYYYMMDDHHMMSSZ for 2050 and later (RFC 5280 4.1.2.5).
// Its tag and length are shape.
func (w shapeWriter) time(s *cryptobyte.String) (time.Time, bool) {
	var t cryptobyte.String
	var tag cryptobyte_asn1.Tag
	if !s.ReadAnyASN1(&t, &tag) {
		return time.Time{}, false
	}
	w.masked('T', byte(tag), byte(len(t)))
	var layout string
	switch {
	case tag == cryptobyte_asn1.UTCTime && len(t) == 13:
		layout = "060102150405Z"
	case tag == cryptobyte_asn1.GeneralizedTime && len(t) == 15:
		layout = "20060102150405Z"
	default:
		return time.Time{}, false
	}
	for _, c := range t[:len(t)-1] {
		if c < '0' || c > '9' {
			return time.Time{}, false
		}
	}
	v, err := time.Parse(layout, string(t))
	if err != nil || (tag == cryptobyte_asn1.GeneralizedTime && v.Year() < 2050) {
		return time.Time{}, false
	}
	return v, true
}

// key accepts an ECDSA key (an uncompressed point) or an Ed25519 key. The
// algorithm identifier, with the curve, is shape, and so is the key's
// length; the key itself is not.
func (w shapeWriter) key(spki cryptobyte.String) bool {
	var alg, inner, oid cryptobyte.String
	var bits []byte
	if !spki.ReadASN1Element(&alg, cryptobyte_asn1.SEQUENCE) || !spki.ReadASN1BitStringAsBytes(&bits) || !spki.Empty() {
		return false
	}
	inner = alg
	if !inner.ReadASN1(&inner, cryptobyte_asn1.SEQUENCE) || !inner.ReadASN1(&oid, cryptobyte_asn1.OBJECT_IDENTIFIER) {
		return false
	}
	switch {
	case bytes.Equal(oid, oidECPublicKey):
		// 0x04 ‖ X ‖ Y: 65, 97 or 133 bytes for P-256, P-384 and P-521.
		if len(bits) == 0 || bits[0] != 4 || (len(bits) != 65 && len(bits) != 97 && len(bits) != 133) {
			return false
		}
	case bytes.Equal(oid, oidEd25519):
		if len(bits) != 32 {
			return false
		}
	default:
		return false // RSA and anything else: linted every time
	}
	w.element(alg)
	w.masked('P', byte(len(bits)))
	return true
}

// names accepts a GeneralNames of plain DNS names, SPIFFE IDs and IP
// addresses. The kind of each name, in order, is shape, and so are an
// IP's length and a URI's scheme and authority.
func (w shapeWriter) names(value cryptobyte.String) bool {
	var names cryptobyte.String
	if !value.ReadASN1(&names, cryptobyte_asn1.SEQUENCE) || !value.Empty() || names.Empty() {
		return false
	}
	for !names.Empty() {
		var name cryptobyte.String
		var tag cryptobyte_asn1.Tag
		if !names.ReadAnyASN1(&name, &tag) {
			return false
		}
		switch tag {
		case cryptobyte_asn1.Tag(2).ContextSpecific(): // dNSName
			if !plainDNSName(string(name)) {
				return false
			}
			w.masked('D')
		case cryptobyte_asn1.Tag(6).ContextSpecific(): // uniformResourceIdentifier
			authority, ok := plainSPIFFEID(string(name))
			if !ok {
				return false
			}
			w.masked('U')
			w.element([]byte(authority))
		case cryptobyte_asn1.Tag(7).ContextSpecific(): // iPAddress
			if len(name) != 4 && len(name) != 16 {
				return false
			}
			w.masked('I', byte(len(name)))
		default:
			return false
		}
	}
	return true
}

// plainDNSName accepts two or more dot-separated labels of lower-case
// letters, digits and inner hyphens, 1 to 63 bytes each, 253 in all, none
// of them punycode ("xn--"), and a leftmost "*" label.
func plainDNSName(name string) bool {
	if len(name) == 0 || len(name) > 253 {
		return false
	}
	labels := 0
	for i, start := 0, 0; i <= len(name); i++ {
		if i < len(name) && name[i] != '.' {
			continue
		}
		label := name[start:i]
		start = i + 1
		labels++
		switch {
		case label == "*" && labels == 1:
			continue
		case len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-':
			return false
		case len(label) >= 4 && label[:4] == "xn--":
			return false
		}
		for j := 0; j < len(label); j++ {
			if c := label[j]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
				return false
			}
		}
	}
	return labels >= 2 && !(name[0] == '*' && labels < 3)
}

// plainSPIFFEID accepts spiffe://<authority>[/<segment>...] whose segments
// are non-empty, neither "." nor "..", and made of letters, digits, ".",
// "-" and "_", and returns the scheme and authority, which are shape.
func plainSPIFFEID(uri string) (authority string, ok bool) {
	const scheme = "spiffe://"
	if len(uri) <= len(scheme) || uri[:len(scheme)] != scheme {
		return "", false
	}
	rest := uri[len(scheme):]
	end := len(rest)
	for i := 0; i < len(rest); i++ {
		if rest[i] == '/' {
			end = i
			break
		}
	}
	if end == 0 {
		return "", false
	}
	authority, path := uri[:len(scheme)+end], rest[end:]
	for path != "" {
		path = path[1:] // the '/'
		seg := path
		for i := 0; i < len(path); i++ {
			if path[i] == '/' {
				seg = path[:i]
				break
			}
		}
		path = path[len(seg):]
		if seg == "" || seg == "." || seg == ".." {
			return "", false
		}
		for j := 0; j < len(seg); j++ {
			c := seg[j]
			if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '.' && c != '-' && c != '_' {
				return "", false
			}
		}
	}
	return authority, true
}
