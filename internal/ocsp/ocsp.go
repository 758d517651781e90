// Package ocsp is mica's RFC 6960 OCSP responder: GET and POST, answers
// good, revoked (with time and reason) or unknown, echoes a nonce when the
// request carries one, and signs with a delegated responder certificate
// (id-kp-OCSPSigning, ocsp-nocheck) that it has the issuing CA sign at
// start-up and renews at two thirds of its life.
//
// Responses are cached per CertID and signed ahead of need: Run re-signs
// every cached response before half its validity has passed, and Changed
// re-signs a certificate's responses the moment it is revoked, so the hot
// path (a request without a nonce for a certificate asked about before) is
// a map lookup and a write, with no signature. A nonce makes the response
// unique, so those are signed per request. The cache (Cache) is bounded by
// the bytes its responses take, not by their number, and evicts those
// asked for least recently; a response evicted is signed again when next
// asked for.
//
// golang.org/x/crypto/ocsp takes no request or response extensions, so
// requests are parsed and responses encoded here with cryptobyte. Start
// with New, then Handler and Run.
package ocsp

import (
	"bytes"
	"crypto"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Response status codes of OCSPResponse (RFC 6960 4.2.1).
const (
	statusSuccessful       = 0
	statusMalformedRequest = 1
	statusInternalError    = 2
	statusTryLater         = 3
	statusUnauthorized     = 6
)

var (
	oidNonce      = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 2}
	oidBasic      = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 1}
	oidNoCheck    = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}
	oidECDSA256   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	hashAlgorithm = map[string]crypto.Hash{
		"1.3.14.3.2.26":          crypto.SHA1,
		"2.16.840.1.101.3.4.2.1": crypto.SHA256,
		"2.16.840.1.101.3.4.2.2": crypto.SHA384,
		"2.16.840.1.101.3.4.2.3": crypto.SHA512,
	}
)

func hashOf(h crypto.Hash, data []byte) []byte {
	switch h {
	case crypto.SHA1:
		s := sha1.Sum(data)
		return s[:]
	case crypto.SHA256:
		s := sha256.Sum256(data)
		return s[:]
	case crypto.SHA384:
		s := sha512.Sum384(data)
		return s[:]
	default:
		s := sha512.Sum512(data)
		return s[:]
	}
}

// request is what mica needs from an OCSPRequest.
type request struct {
	certID   []byte // the CertID element, echoed verbatim in the response
	hash     crypto.Hash
	nameHash []byte
	keyHash  []byte
	serial   *big.Int
	nonce    []byte // the nonce Extension element, echoed verbatim; nil if none
}

var errMalformed = errors.New("ocsp: malformed request")

// parseRequest reads an OCSPRequest with exactly one certificate. The
// optional signature is ignored: mica answers anyone, as RFC 6960 allows.
func parseRequest(der []byte) (*request, error) {
	in := cryptobyte.String(der)
	var ocspReq, tbs, list, one cryptobyte.String
	if !in.ReadASN1(&ocspReq, cbasn1.SEQUENCE) || !in.Empty() ||
		!ocspReq.ReadASN1(&tbs, cbasn1.SEQUENCE) ||
		!tbs.SkipOptionalASN1(cbasn1.Tag(0).ContextSpecific().Constructed()) ||
		!tbs.SkipOptionalASN1(cbasn1.Tag(1).ContextSpecific().Constructed()) ||
		!tbs.ReadASN1(&list, cbasn1.SEQUENCE) ||
		!list.ReadASN1(&one, cbasn1.SEQUENCE) {
		return nil, errMalformed
	}
	if !list.Empty() {
		return nil, errors.New("ocsp: the request asks about more than one certificate; ask one at a time")
	}
	r := &request{}
	var certID, alg cryptobyte.String
	var oid asn1.ObjectIdentifier
	if !one.ReadASN1Element(&certID, cbasn1.SEQUENCE) {
		return nil, errMalformed
	}
	r.certID = bytes.Clone(certID)
	if !certID.ReadASN1(&certID, cbasn1.SEQUENCE) ||
		!certID.ReadASN1(&alg, cbasn1.SEQUENCE) ||
		!alg.ReadASN1ObjectIdentifier(&oid) {
		return nil, errMalformed
	}
	h, ok := hashAlgorithm[oid.String()]
	if !ok {
		return nil, errors.New("ocsp: the CertID hash algorithm is not SHA-1 or SHA-2")
	}
	r.hash, r.serial = h, new(big.Int)
	var nameHash, keyHash cryptobyte.String
	if !certID.ReadASN1(&nameHash, cbasn1.OCTET_STRING) || !certID.ReadASN1(&keyHash, cbasn1.OCTET_STRING) ||
		!certID.ReadASN1Integer(r.serial) {
		return nil, errMalformed
	}
	r.nameHash, r.keyHash = nameHash, keyHash
	var exts cryptobyte.String
	var present bool
	if !tbs.ReadOptionalASN1(&exts, &present, cbasn1.Tag(2).ContextSpecific().Constructed()) {
		return nil, errMalformed
	}
	if present {
		var seq cryptobyte.String
		if !exts.ReadASN1(&seq, cbasn1.SEQUENCE) {
			return nil, errMalformed
		}
		for !seq.Empty() {
			var ext, body cryptobyte.String
			var id asn1.ObjectIdentifier
			if !seq.ReadASN1Element(&ext, cbasn1.SEQUENCE) {
				return nil, errMalformed
			}
			body = ext
			if !body.ReadASN1(&body, cbasn1.SEQUENCE) || !body.ReadASN1ObjectIdentifier(&id) {
				return nil, errMalformed
			}
			if id.Equal(oidNonce) {
				if err := checkNonce(body); err != nil {
					return nil, err
				}
				r.nonce = bytes.Clone(ext)
			}
		}
	}
	return r, nil
}

// maxNonce is RFC 8954's bound on a nonce's length.
const maxNonce = 32

// checkNonce reads the rest of a nonce extension (after its extnID:
// critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING holding the nonce
// as an OCTET STRING) and refuses, as RFC 8954 §2.1 requires, a nonce of
// zero or more than 32 octets.
func checkNonce(rest cryptobyte.String) error {
	if rest.PeekASN1Tag(cbasn1.BOOLEAN) {
		var critical bool
		if !rest.ReadASN1Boolean(&critical) {
			return errMalformed
		}
	}
	var value, nonce cryptobyte.String
	if !rest.ReadASN1(&value, cbasn1.OCTET_STRING) || !rest.Empty() {
		return errMalformed
	}
	if !value.ReadASN1(&nonce, cbasn1.OCTET_STRING) || !value.Empty() {
		return errMalformed
	}
	if len(nonce) == 0 || len(nonce) > maxNonce {
		return fmt.Errorf("%w: the nonce is %d octets; RFC 8954 allows 1 to %d", errMalformed, len(nonce), maxNonce)
	}
	return nil
}

// status is a certificate's answer.
type status struct {
	kind      int // 0 good, 1 revoked, 2 unknown
	revokedAt time.Time
	reason    int
}

// encodeResponse builds and signs a successful OCSPResponse.
func encodeResponse(k *responderKey, certID []byte, st status, thisUpdate, nextUpdate time.Time, nonce []byte) ([]byte, error) {
	b := cryptobyte.NewBuilder(make([]byte, 0, 256))
	b.AddASN1(cbasn1.SEQUENCE, func(rd *cryptobyte.Builder) {
		// responderID byKey [2] EXPLICIT KeyHash
		rd.AddASN1(cbasn1.Tag(2).ContextSpecific().Constructed(), func(id *cryptobyte.Builder) {
			id.AddASN1OctetString(k.keyHash)
		})
		rd.AddASN1GeneralizedTime(thisUpdate)
		rd.AddASN1(cbasn1.SEQUENCE, func(list *cryptobyte.Builder) {
			list.AddASN1(cbasn1.SEQUENCE, func(single *cryptobyte.Builder) {
				single.AddBytes(certID)
				switch st.kind {
				case 0:
					single.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(*cryptobyte.Builder) {})
				case 1:
					single.AddASN1(cbasn1.Tag(1).ContextSpecific().Constructed(), func(rev *cryptobyte.Builder) {
						rev.AddASN1GeneralizedTime(st.revokedAt.UTC().Truncate(time.Second))
						if st.reason != 0 {
							rev.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(r *cryptobyte.Builder) {
								r.AddASN1Enum(int64(st.reason))
							})
						}
					})
				default:
					single.AddASN1(cbasn1.Tag(2).ContextSpecific(), func(*cryptobyte.Builder) {})
				}
				single.AddASN1GeneralizedTime(thisUpdate)
				single.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(n *cryptobyte.Builder) {
					n.AddASN1GeneralizedTime(nextUpdate)
				})
			})
		})
		if nonce != nil {
			rd.AddASN1(cbasn1.Tag(1).ContextSpecific().Constructed(), func(e *cryptobyte.Builder) {
				e.AddASN1(cbasn1.SEQUENCE, func(exts *cryptobyte.Builder) { exts.AddBytes(nonce) })
			})
		}
	})
	tbs, err := b.Bytes()
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(tbs)
	sig, err := k.signer.Sign(nil, digest[:], crypto.SHA256)
	if err != nil {
		return nil, err
	}
	out := cryptobyte.NewBuilder(make([]byte, 0, len(tbs)+len(k.certs)+256))
	out.AddASN1(cbasn1.SEQUENCE, func(resp *cryptobyte.Builder) {
		resp.AddASN1Enum(statusSuccessful)
		resp.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(rb *cryptobyte.Builder) {
			rb.AddASN1(cbasn1.SEQUENCE, func(rb *cryptobyte.Builder) {
				rb.AddASN1ObjectIdentifier(oidBasic)
				rb.AddASN1(cbasn1.OCTET_STRING, func(basic *cryptobyte.Builder) {
					basic.AddASN1(cbasn1.SEQUENCE, func(basic *cryptobyte.Builder) {
						basic.AddBytes(tbs)
						basic.AddASN1(cbasn1.SEQUENCE, func(alg *cryptobyte.Builder) { alg.AddASN1ObjectIdentifier(oidECDSA256) })
						basic.AddASN1BitString(sig)
						basic.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(c *cryptobyte.Builder) {
							c.AddASN1(cbasn1.SEQUENCE, func(c *cryptobyte.Builder) { c.AddBytes(k.certs) })
						})
					})
				})
			})
		})
	})
	return out.Bytes()
}

// errorResponse is an unsigned OCSPResponse with only a status.
func errorResponse(code int) []byte {
	return []byte{0x30, 0x03, 0x0a, 0x01, byte(code)}
}

// asn1BitString wraps encoding/asn1.BitString for cryptobyte.
type asn1BitString struct{ asn1.BitString }
