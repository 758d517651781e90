package testpki

import (
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	_ "embed"
	"encoding/pem"
	"sync"
)

// rsaKeysPEM holds RSA-3072 keys made once for tests, so that a test
// binary does not spend seconds of CPU generating each RSA key its CAs
// and leaves need. They are test keys and protect nothing.
//
//go:embed testdata/rsa-3072.pem
var rsaKeysPEM []byte

// rsaKeys hands each stored key out at most once per test binary, so
// every CA and leaf still has a key of its own; past the last, keys are
// generated.
var rsaKeys struct {
	sync.Mutex
	rest []byte
}

func init() { rsaKeys.rest = rsaKeysPEM }

// storedRSAKey returns the next unused stored key, or nil when none is
// left.
func storedRSAKey() crypto.Signer {
	rsaKeys.Lock()
	defer rsaKeys.Unlock()
	block, rest := pem.Decode(rsaKeys.rest)
	if block == nil {
		return nil
	}
	rsaKeys.rest = rest
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		panic("testpki: testdata/rsa-3072.pem: " + err.Error())
	}
	return k.(*rsa.PrivateKey)
}
