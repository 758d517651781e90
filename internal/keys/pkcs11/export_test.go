//go:build cgo

package pkcs11

import p11 "github.com/miekg/pkcs11"

// Raw runs fn on a session of the token with the key's private object, so
// that tests can ask the token about it directly.
func Raw(k *Key, fn func(ctx *p11.Ctx, s p11.SessionHandle, priv p11.ObjectHandle) error) error {
	return k.t.session(func(s p11.SessionHandle) error { return fn(k.t.ctx, s, k.priv) })
}

// IsCode reports whether err is the PKCS#11 return value code.
var IsCode = isCode
