//go:build cgo

package pkcs11_test

import (
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/mica-pki/mica/internal/keys"
	"github.com/mica-pki/mica/internal/keys/pkcs11"
	"github.com/mica-pki/mica/internal/keys/pkcs11/softhsmtest"
)

// TestKeyNeverLeavesToken checks, for every algorithm, what the token says
// and does about a generated key: marked sensitive and never extractable
// since birth, its private value unreadable, its flags not changeable
// back, and wrapping (exporting under another key) refused.
func TestKeyNeverLeavesToken(t *testing.T) {
	tok, err := pkcs11.Open(softhsmtest.New(t))
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	for _, alg := range keys.Algorithms() {
		k, err := tok.Generate(alg, "sealed-"+string(alg))
		if err != nil {
			t.Fatal(err)
		}
		err = pkcs11.Raw(k, func(ctx *p11.Ctx, s p11.SessionHandle, priv p11.ObjectHandle) error {
			attrs, err := ctx.GetAttributeValue(s, priv, []*p11.Attribute{
				p11.NewAttribute(p11.CKA_EXTRACTABLE, nil), p11.NewAttribute(p11.CKA_SENSITIVE, nil),
				p11.NewAttribute(p11.CKA_NEVER_EXTRACTABLE, nil), p11.NewAttribute(p11.CKA_ALWAYS_SENSITIVE, nil),
				p11.NewAttribute(p11.CKA_TOKEN, nil),
			})
			if err != nil {
				return err
			}
			want := []bool{false, true, true, true, true}
			names := []string{"CKA_EXTRACTABLE", "CKA_SENSITIVE", "CKA_NEVER_EXTRACTABLE", "CKA_ALWAYS_SENSITIVE", "CKA_TOKEN"}
			for i, a := range attrs {
				if got := len(a.Value) == 1 && a.Value[0] == 1; got != want[i] {
					t.Errorf("%s: %s = %v, want %v", alg, names[i], got, want[i])
				}
			}
			secret := p11.CKA_VALUE
			switch alg {
			case keys.RSA3072:
				secret = p11.CKA_PRIVATE_EXPONENT
			}
			if _, err := ctx.GetAttributeValue(s, priv, []*p11.Attribute{p11.NewAttribute(uint(secret), nil)}); !pkcs11.IsCode(err, p11.CKR_ATTRIBUTE_SENSITIVE) {
				t.Errorf("%s: reading the private value: got %v, want CKR_ATTRIBUTE_SENSITIVE", alg, err)
			}
			if err := ctx.SetAttributeValue(s, priv, []*p11.Attribute{p11.NewAttribute(p11.CKA_EXTRACTABLE, true)}); err == nil {
				t.Errorf("%s: the token let CKA_EXTRACTABLE be set back to true", alg)
			}
			if err := ctx.SetAttributeValue(s, priv, []*p11.Attribute{p11.NewAttribute(p11.CKA_SENSITIVE, false)}); err == nil {
				t.Errorf("%s: the token let CKA_SENSITIVE be cleared", alg)
			}
			// An AES session key that may wrap: exporting the CA key under
			// it must be refused.
			wrapKey, err := ctx.GenerateKey(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)}, []*p11.Attribute{
				p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY), p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
				p11.NewAttribute(p11.CKA_VALUE_LEN, 32), p11.NewAttribute(p11.CKA_TOKEN, false), p11.NewAttribute(p11.CKA_WRAP, true),
			})
			if err != nil {
				return err
			}
			defer ctx.DestroyObject(s, wrapKey)
			if _, err := ctx.WrapKey(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_WRAP_PAD, nil)}, wrapKey, priv); err == nil {
				t.Errorf("%s: the token wrapped (exported) the CA key", alg)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
	}
}
