package policy

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

// Key type names, as written in key_types and seen by CEL rules.
const (
	KeyECDSAP256 = "ecdsa-p256"
	KeyECDSAP384 = "ecdsa-p384"
	KeyECDSAP521 = "ecdsa-p521"
	KeyEd25519   = "ed25519"
	KeyRSA       = "rsa"
)

// knownKeyTypes lists every key type a profile may allow, in display order.
var knownKeyTypes = []string{KeyECDSAP256, KeyECDSAP384, KeyECDSAP521, KeyEd25519, KeyRSA}

// defaultKeyTypes leaves RSA out: it is slower and larger, so a profile asks
// for it explicitly.
var defaultKeyTypes = []string{KeyECDSAP256, KeyECDSAP384, KeyEd25519}

// keyInfo is what policy needs to know about a subject public key.
type keyInfo struct {
	typ  string // one of the Key* names
	bits int    // RSA modulus size, or the curve size
}

func (k keyInfo) String() string {
	if k.typ == KeyRSA {
		return KeyRSA + "-" + strconv.Itoa(k.bits)
	}
	return k.typ
}

// classifyKey names a public key's type and size.
func classifyKey(pub crypto.PublicKey) (keyInfo, error) {
	switch k := pub.(type) {
	case nil:
		return keyInfo{}, fmt.Errorf("the request carries no public key")
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			return keyInfo{}, fmt.Errorf("the ECDSA public key has no curve")
		}
		return classifyCurve(k.Curve)
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return keyInfo{}, fmt.Errorf("the Ed25519 public key is %d bytes, not %d", len(k), ed25519.PublicKeySize)
		}
		return keyInfo{typ: KeyEd25519, bits: 256}, nil
	case *rsa.PublicKey:
		if k == nil || k.N == nil || k.N.Sign() <= 0 {
			return keyInfo{}, fmt.Errorf("the RSA public key has no modulus")
		}
		return keyInfo{typ: KeyRSA, bits: k.N.BitLen()}, nil
	}
	return keyInfo{}, fmt.Errorf("public key type %T is not supported: use ECDSA, Ed25519 or RSA", pub)
}

func classifyCurve(c elliptic.Curve) (keyInfo, error) {
	switch c.Params().Name {
	case "P-256":
		return keyInfo{typ: KeyECDSAP256, bits: 256}, nil
	case "P-384":
		return keyInfo{typ: KeyECDSAP384, bits: 384}, nil
	case "P-521":
		return keyInfo{typ: KeyECDSAP521, bits: 521}, nil
	}
	return keyInfo{}, fmt.Errorf("ECDSA curve %s is not supported: use P-256, P-384 or P-521", c.Params().Name)
}

// SamplePublicKey returns a public key of the named kind ("ecdsa-p256",
// "ed25519", "rsa-2048", "rsa-1024", ...) for policy tests. The keys are
// fixed, not random: policy looks only at type and size, and fixed keys
// keep test runs reproducible and fast. Their private halves are trivial
// (the curve generator, an all-zero seed), so never use them to issue.
// "none" gives a nil key.
func SamplePublicKey(kind string) (crypto.PublicKey, error) {
	switch kind {
	case "none":
		return nil, nil
	case KeyECDSAP256:
		return generatorKey(elliptic.P256()), nil
	case KeyECDSAP384:
		return generatorKey(elliptic.P384()), nil
	case KeyECDSAP521:
		return generatorKey(elliptic.P521()), nil
	case KeyEd25519:
		return ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)).Public(), nil
	}
	if s, ok := strings.CutPrefix(kind, KeyRSA+"-"); ok {
		bits, err := strconv.Atoi(s)
		if err == nil && bits >= 8 && bits <= 16384 {
			// 2^(bits-1)+1: odd and exactly bits long, which is all a size
			// check looks at.
			n := new(big.Int).Lsh(big.NewInt(1), uint(bits-1))
			n.SetBit(n, 0, 1)
			return &rsa.PublicKey{N: n, E: 65537}, nil
		}
	}
	return nil, fmt.Errorf("policy: key %q is not a known sample key: use none, %s, or rsa-BITS like rsa-2048",
		kind, strings.Join(knownKeyTypes[:4], ", "))
}

// generatorKey is the public key whose point is the curve's generator: a
// valid key of the right curve that costs nothing to make.
func generatorKey(c elliptic.Curve) *ecdsa.PublicKey {
	p := c.Params()
	size := (p.BitSize + 7) / 8
	point := make([]byte, 1+2*size)
	point[0] = 4 // uncompressed
	p.Gx.FillBytes(point[1 : 1+size])
	p.Gy.FillBytes(point[1+size:])
	pub, err := ecdsa.ParseUncompressedPublicKey(c, point)
	if err != nil {
		panic("policy: generator point rejected: " + err.Error())
	}
	return pub
}
