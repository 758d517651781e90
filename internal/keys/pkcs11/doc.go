// Package pkcs11 keeps CA keys inside a PKCS#11 token (an HSM, or SoftHSM2
// in tests): keys are generated in the token as sensitive, never
// extractable objects, and every signature is made by the token. A key is
// named by an RFC 7512 URI ("pkcs11:token=mica;object=…;id=%01…"), which is
// what mica stores to find it again; the key itself never leaves the token.
//
// Start with [Open] (module path, token label, PIN), then [Token.Generate]
// or [Token.Find]; both return a [*Key], which is a [crypto.Signer]
// (ECDSA P-256 and P-384, RSA 3072 with PKCS #1 v1.5, and Ed25519 through
// CKM_EDDSA, so the audit log's and the token key's Ed25519 keys can live in
// the token too).
//
// Loading a PKCS#11 module needs cgo. A binary built with CGO_ENABLED=0
// still builds and runs; [Open] then returns [ErrNeedsCgo], which says to
// build with cgo.
package pkcs11
