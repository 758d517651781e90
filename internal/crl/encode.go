// Package crl builds and publishes mica's certificate revocation lists: one
// full RFC 5280 v2 CRL per issuing CA (CRL number, authority key
// identifier, reason codes, thisUpdate and nextUpdate), regenerated shortly
// after every revocation and on a schedule well before nextUpdate, and
// served over plain HTTP with ETag and Last-Modified. CRL numbers come from
// the store (store.Store.NumberCRL), so they grow across restarts and
// replicas.
//
// Start with Build, the encoder: it writes the revokedCertificates sequence
// straight into one DER buffer with cryptobyte, so a million entries cost
// one buffer of about 40 bytes each instead of crypto/x509's per-entry
// structures (7.6 s and 1.1 GB for a million). Service (service.go) keeps
// the current CRL and regenerates it; Handler serves it.
package crl

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"iter"
	"math/big"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Entry is one revoked certificate.
type Entry struct {
	// Serial is the certificate's serial number, big-endian, without sign
	// (as in big.Int.Bytes; leading zeros are ignored).
	Serial    []byte
	RevokedAt time.Time
	// Reason is the RFC 5280 CRLReason code; 0 (unspecified) is written as
	// no reason code at all, as RFC 5280 5.3.1 asks.
	Reason int
}

// Signer signs a CRL with the CA's key: issuance.CRLSigner, the one place
// a CA key signs a CRL.
type Signer interface {
	Public() crypto.PublicKey
	// SignCRL signs the DER TBSCertList (with the algorithm this package
	// writes into it for Public's key type).
	SignCRL(tbs []byte) ([]byte, error)
}

// Params are the CRL's fixed fields.
type Params struct {
	// Issuer is the CA whose certificates the CRL lists; Signer signs
	// with its key.
	Issuer *x509.Certificate
	Signer Signer
	// Number is the CRL number: it must grow with every CRL of this issuer.
	Number     *big.Int
	ThisUpdate time.Time
	NextUpdate time.Time
	// Entries is a hint of how many entries come, to size the buffer once.
	Entries int
}

var (
	oidAKI       = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidCRLNumber = asn1.ObjectIdentifier{2, 5, 29, 20}
)

// entryBytes is about what one entry takes: serial up to 20 bytes, a time,
// an optional reason code extension, and their headers.
const entryBytes = 48

// Build encodes the CRL with the entries entries yields, signs it with
// p.Signer and returns its DER. nil entries is an empty CRL.
func Build(p Params, entries iter.Seq[Entry]) ([]byte, error) {
	if entries == nil {
		entries = func(func(Entry) bool) {}
	}
	if p.Issuer == nil || p.Signer == nil || p.Number == nil || p.Number.Sign() < 0 {
		return nil, errors.New("crl: Params need the issuer, its signer and a non-negative CRL number")
	}
	if len(p.Number.Bytes()) > 20 {
		return nil, errors.New("crl: CRL number is longer than the 20 octets RFC 5280 allows")
	}
	if len(p.Issuer.SubjectKeyId) == 0 {
		return nil, fmt.Errorf("crl: issuer %q has no subject key identifier to name in the CRL", p.Issuer.Subject)
	}
	if !p.NextUpdate.After(p.ThisUpdate) {
		return nil, errors.New("crl: nextUpdate must be after thisUpdate")
	}
	alg, err := signatureAlgorithm(p.Signer.Public())
	if err != nil {
		return nil, err
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, 1024+p.Entries*entryBytes))
	var entryErr error
	b.AddASN1(cbasn1.SEQUENCE, func(tbs *cryptobyte.Builder) {
		tbs.AddASN1Int64(1) // v2
		tbs.AddBytes(alg.id)
		tbs.AddBytes(p.Issuer.RawSubject)
		addTime(tbs, p.ThisUpdate)
		addTime(tbs, p.NextUpdate)
		// The revokedCertificates field is omitted, not empty, when there
		// are no entries (RFC 5280 5.1.2.6); find out by peeking.
		next, stop := iter.Pull(entries)
		defer stop()
		first, ok := next()
		if ok {
			tbs.AddASN1(cbasn1.SEQUENCE, func(list *cryptobyte.Builder) {
				scratch := make([]byte, 0, 64)
				for e := first; ok; e, ok = next() {
					if err := addEntry(list, &scratch, e); err != nil {
						entryErr = err
						return
					}
				}
			})
		}
		tbs.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(exts *cryptobyte.Builder) {
				addExtension(exts, oidAKI, func(v *cryptobyte.Builder) {
					v.AddASN1(cbasn1.SEQUENCE, func(aki *cryptobyte.Builder) {
						aki.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(id *cryptobyte.Builder) { id.AddBytes(p.Issuer.SubjectKeyId) })
					})
				})
				addExtension(exts, oidCRLNumber, func(v *cryptobyte.Builder) { v.AddASN1BigInt(p.Number) })
			})
		})
	})
	if entryErr != nil {
		return nil, entryErr
	}
	tbs, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("crl: encoding: %w", err)
	}
	sig, err := p.Signer.SignCRL(tbs)
	if err != nil {
		return nil, fmt.Errorf("crl: signing: %w", err)
	}
	// The signed CRL wraps the TBS in one more SEQUENCE; writing the outer
	// header by hand avoids a second builder copying the whole list again.
	tail := cryptobyte.NewBuilder(make([]byte, 0, 256))
	tail.AddBytes(alg.id)
	tail.AddASN1BitString(sig)
	rest, err := tail.Bytes()
	if err != nil {
		return nil, fmt.Errorf("crl: encoding: %w", err)
	}
	body := len(tbs) + len(rest)
	out := make([]byte, 0, body+6)
	out = append(out, 0x30)
	out = appendLength(out, body)
	out = append(out, tbs...)
	return append(out, rest...), nil
}

func appendLength(out []byte, n int) []byte {
	if n < 0x80 {
		return append(out, byte(n))
	}
	var l []byte
	for v := n; v > 0; v >>= 8 {
		l = append([]byte{byte(v)}, l...)
	}
	out = append(out, 0x80|byte(len(l)))
	return append(out, l...)
}

// addEntry appends one revokedCertificates entry. Entries are encoded by
// hand into a scratch buffer rather than with nested cryptobyte builders,
// which allocate a child builder per element: for a million entries that
// is the difference between about 0.2 and 0.8 GB of garbage.
func addEntry(b *cryptobyte.Builder, scratch *[]byte, e Entry) error {
	s := e.Serial
	for len(s) > 1 && s[0] == 0 {
		s = s[1:]
	}
	if len(s) == 0 || len(s) > 20 {
		return fmt.Errorf("crl: serial %x is empty or longer than 20 octets", e.Serial)
	}
	if e.Reason < 0 || e.Reason > 10 || e.Reason == 7 {
		return fmt.Errorf("crl: serial %x: reason %d is not an RFC 5280 CRLReason code", e.Serial, e.Reason)
	}
	// SEQUENCE { INTEGER serial, Time, [extensions] }: at most 2+21 + 2+15
	// + 14 content bytes, so every length here fits in one byte.
	buf := append((*scratch)[:0], 0x30, 0)
	n := len(s)
	if s[0]&0x80 != 0 {
		n++ // a serial is positive: a leading zero keeps the sign bit clear
	}
	buf = append(buf, 0x02, byte(n))
	if n > len(s) {
		buf = append(buf, 0)
	}
	buf = append(buf, s...)
	buf = appendTime(buf, e.RevokedAt)
	if e.Reason != 0 {
		// crlEntryExtensions { Extension { reasonCode (2.5.29.21), OCTET STRING { ENUMERATED } } }
		buf = append(buf, 0x30, 0x0c, 0x30, 0x0a, 0x06, 0x03, 0x55, 0x1d, 0x15, 0x04, 0x03, 0x0a, 0x01, byte(e.Reason))
	}
	buf[1] = byte(len(buf) - 2)
	b.AddBytes(buf)
	*scratch = buf
	return nil
}

// appendTime appends UTCTime (years 1950-2049) or GeneralizedTime, as RFC
// 5280 4.1.2.5 requires, to the second, in UTC.
func appendTime(buf []byte, t time.Time) []byte {
	t = t.UTC()
	y := t.Year()
	if y >= 1950 && y < 2050 {
		buf = append(buf, 0x17, 13)
		buf = append2(buf, y%100)
	} else {
		buf = append(buf, 0x18, 15)
		buf = append2(buf, y/100)
		buf = append2(buf, y%100)
	}
	buf = append2(buf, int(t.Month()))
	buf = append2(buf, t.Day())
	buf = append2(buf, t.Hour())
	buf = append2(buf, t.Minute())
	buf = append2(buf, t.Second())
	return append(buf, 'Z')
}

func append2(buf []byte, v int) []byte { return append(buf, byte('0'+v/10), byte('0'+v%10)) }

func addExtension(b *cryptobyte.Builder, oid asn1.ObjectIdentifier, value func(*cryptobyte.Builder)) {
	b.AddASN1(cbasn1.SEQUENCE, func(ext *cryptobyte.Builder) {
		ext.AddASN1ObjectIdentifier(oid)
		ext.AddASN1(cbasn1.OCTET_STRING, value)
	})
}

// addTime writes a Time as appendTime does.
func addTime(b *cryptobyte.Builder, t time.Time) {
	b.AddBytes(appendTime(nil, t))
}

// algorithm is a signature algorithm: its DER AlgorithmIdentifier and how
// to sign with it.
type algorithm struct {
	id   []byte
	hash crypto.Hash // 0 for Ed25519, which signs the message itself
}

func (a algorithm) sign(s crypto.Signer, msg []byte) ([]byte, error) {
	if a.hash == 0 {
		return s.Sign(rand.Reader, msg, crypto.Hash(0))
	}
	h := a.hash.New()
	h.Write(msg)
	return s.Sign(rand.Reader, h.Sum(nil), a.hash)
}

// SignatureAlgorithm is the algorithm mica signs with for a key: the
// AlgorithmIdentifier DER and the hash (0 for Ed25519). The OCSP responder
// shares it.
func SignatureAlgorithm(pub crypto.PublicKey) (id []byte, hash crypto.Hash, err error) {
	a, err := signatureAlgorithm(pub)
	return a.id, a.hash, err
}

// Sign signs msg with s the way SignatureAlgorithm says.
func Sign(s crypto.Signer, msg []byte) ([]byte, error) {
	a, err := signatureAlgorithm(s.Public())
	if err != nil {
		return nil, err
	}
	return a.sign(s, msg)
}

func signatureAlgorithm(pub crypto.PublicKey) (algorithm, error) {
	var oid asn1.ObjectIdentifier
	var hash crypto.Hash
	withNull := false
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			oid, hash = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}, crypto.SHA256
		case elliptic.P384():
			oid, hash = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}, crypto.SHA384
		default:
			return algorithm{}, errors.New("crl: unsupported ECDSA curve: use P-256 or P-384")
		}
	case *rsa.PublicKey:
		// sha256WithRSAEncryption carries explicit NULL parameters (RFC 4055).
		oid, hash, withNull = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}, crypto.SHA256, true
	case ed25519.PublicKey:
		oid = asn1.ObjectIdentifier{1, 3, 101, 112}
	default:
		return algorithm{}, fmt.Errorf("crl: unsupported issuer key type %T", pub)
	}
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		if withNull {
			b.AddASN1NULL()
		}
	})
	id, err := b.Bytes()
	return algorithm{id: id, hash: hash}, err
}
