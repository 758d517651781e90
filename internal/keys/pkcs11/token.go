//go:build cgo

package pkcs11

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strings"
	"sync"

	p11 "github.com/miekg/pkcs11"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/mica-pki/mica/internal/keys"
)

// Mechanisms and key types that miekg/pkcs11 v1.1.2 does not name (PKCS#11
// v3.0 EdDSA).
const (
	ckkECEdwards           = 0x00000040
	ckmECEdwardsKeyPairGen = 0x00001055
	ckmEdDSA               = 0x00001057
	rsaPublicExponent      = 65537
	defaultSessions        = 8
)

// modules are the loaded PKCS#11 libraries, shared by every Token of the
// process: a library is initialised once and finalised when its last
// Token closes.
var modules = struct {
	sync.Mutex
	m map[string]*module
}{m: map[string]*module{}}

type module struct {
	ctx  *p11.Ctx
	refs int
}

func loadModule(path string) (*p11.Ctx, error) {
	modules.Lock()
	defer modules.Unlock()
	if m := modules.m[path]; m != nil {
		m.refs++
		return m.ctx, nil
	}
	ctx := p11.New(path)
	if ctx == nil {
		return nil, fmt.Errorf("keys/pkcs11: cannot load the PKCS#11 module %s: check the path (Debian's SoftHSM2 is /usr/lib/softhsm/libsofthsm2.so)", path)
	}
	if err := ctx.Initialize(); err != nil && !isCode(err, p11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		ctx.Destroy()
		return nil, fmt.Errorf("keys/pkcs11: initialising %s: %w", path, err)
	}
	modules.m[path] = &module{ctx: ctx, refs: 1}
	return ctx, nil
}

func releaseModule(path string) {
	modules.Lock()
	defer modules.Unlock()
	m := modules.m[path]
	if m == nil {
		return
	}
	if m.refs--; m.refs == 0 {
		m.ctx.Finalize()
		m.ctx.Destroy()
		delete(modules.m, path)
	}
}

func isCode(err error, code uint) bool {
	var e p11.Error
	return errors.As(err, &e) && uint(e) == code
}

// Token is a logged-in PKCS#11 token. Its methods are safe for concurrent
// use; signatures run on a bounded pool of sessions.
type Token struct {
	cfg  Config
	ctx  *p11.Ctx
	slot uint
	// login keeps the user logged in: PKCS#11 login state belongs to the
	// application and lasts while any of its sessions is open.
	login p11.SessionHandle

	idle   chan p11.SessionHandle
	mu     sync.Mutex
	opened int // sessions made for the pool
	// closed is set by Close; sessions returned afterwards are closed.
	closed bool
}

// Open loads the module, finds the token by its label and logs in.
func Open(cfg Config) (*Token, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if cfg.Sessions <= 0 {
		cfg.Sessions = defaultSessions
	}
	ctx, err := loadModule(cfg.Module)
	if err != nil {
		return nil, err
	}
	t := &Token{cfg: cfg, ctx: ctx, idle: make(chan p11.SessionHandle, cfg.Sessions)}
	if err := t.open(); err != nil {
		releaseModule(cfg.Module)
		return nil, err
	}
	return t, nil
}

func (t *Token) open() error {
	slots, err := t.ctx.GetSlotList(true)
	if err != nil {
		return fmt.Errorf("keys/pkcs11: listing slots of %s: %w", t.cfg.Module, err)
	}
	found := 0
	var labels []string
	for _, s := range slots {
		info, err := t.ctx.GetTokenInfo(s)
		if err != nil {
			continue
		}
		label := strings.TrimRight(info.Label, " \x00")
		labels = append(labels, label)
		if label == t.cfg.Token {
			t.slot = s
			found++
		}
	}
	switch {
	case found == 0:
		return fmt.Errorf("keys/pkcs11: no token labelled %q in %s (tokens: %s): initialise one (softhsm2-util --init-token --free --label %s) or fix pkcs11.token",
			t.cfg.Token, t.cfg.Module, strings.Join(labels, ", "), t.cfg.Token)
	case found > 1:
		return fmt.Errorf("keys/pkcs11: %d tokens are labelled %q in %s: give each token its own label", found, t.cfg.Token, t.cfg.Module)
	}
	sh, err := t.ctx.OpenSession(t.slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("keys/pkcs11: opening a session on token %q: %w", t.cfg.Token, err)
	}
	if err := t.ctx.Login(sh, p11.CKU_USER, t.cfg.PIN); err != nil && !isCode(err, p11.CKR_USER_ALREADY_LOGGED_IN) {
		t.ctx.CloseSession(sh)
		if isCode(err, p11.CKR_PIN_INCORRECT) || isCode(err, p11.CKR_PIN_LEN_RANGE) {
			return fmt.Errorf("keys/pkcs11: the PIN for token %q is wrong: check MICA_PKCS11_PIN or pkcs11.pin_file", t.cfg.Token)
		}
		return fmt.Errorf("keys/pkcs11: logging in to token %q: %w", t.cfg.Token, err)
	}
	t.login = sh
	return nil
}

// Close closes the token's sessions (the key objects stay in the token)
// and unloads the module when no other Token uses it.
func (t *Token) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.mu.Unlock()
	for {
		select {
		case s := <-t.idle:
			t.ctx.CloseSession(s)
			continue
		default:
		}
		break
	}
	t.ctx.CloseSession(t.login)
	releaseModule(t.cfg.Module)
	return nil
}

// session runs fn on a session of the pool, opening one when all are busy
// and the pool is not full, else waiting for one.
func (t *Token) session(fn func(p11.SessionHandle) error) error {
	var s p11.SessionHandle
	select {
	case s = <-t.idle:
	default:
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return errors.New("keys/pkcs11: the token was closed")
		}
		grow := t.opened < t.cfg.Sessions
		if grow {
			t.opened++
		}
		t.mu.Unlock()
		if grow {
			var err error
			if s, err = t.ctx.OpenSession(t.slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION); err != nil {
				t.mu.Lock()
				t.opened--
				t.mu.Unlock()
				return fmt.Errorf("keys/pkcs11: opening a session on token %q: %w", t.cfg.Token, err)
			}
		} else {
			s = <-t.idle
		}
	}
	err := fn(s)
	if isCode(err, p11.CKR_SESSION_HANDLE_INVALID) || isCode(err, p11.CKR_SESSION_CLOSED) || isCode(err, p11.CKR_DEVICE_ERROR) {
		// A broken session is dropped; the next call opens a new one.
		t.ctx.CloseSession(s)
		t.mu.Lock()
		t.opened--
		t.mu.Unlock()
		return err
	}
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		t.ctx.CloseSession(s)
	} else {
		t.idle <- s
	}
	return err
}

// Key is a private key inside the token; it signs there. Key implements
// crypto.Signer.
type Key struct {
	t    *Token
	priv p11.ObjectHandle
	pub  crypto.PublicKey
	uri  URI
}

// URI names the key, for Find.
func (k *Key) URI() URI { return k.uri }

// Public is the key's public half, read from the token.
func (k *Key) Public() crypto.PublicKey { return k.pub }

var (
	oidP256    = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidP384    = asn1.ObjectIdentifier{1, 3, 132, 0, 34}
	oidEd25519 = asn1.ObjectIdentifier{1, 3, 101, 112}
)

// Generate makes a new key pair of alg in the token, labelled label, as a
// token object that is sensitive and can never be extracted, and returns
// it.
func (t *Token) Generate(alg keys.Algorithm, label string) (*Key, error) {
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("keys/pkcs11: %w", err)
	}
	common := func(class uint) []*p11.Attribute {
		return []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, class),
			p11.NewAttribute(p11.CKA_TOKEN, true),
			p11.NewAttribute(p11.CKA_ID, id),
			p11.NewAttribute(p11.CKA_LABEL, label),
		}
	}
	pub := append(common(p11.CKO_PUBLIC_KEY), p11.NewAttribute(p11.CKA_VERIFY, true))
	priv := append(common(p11.CKO_PRIVATE_KEY),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_SIGN, true),
		p11.NewAttribute(p11.CKA_DECRYPT, false),
		p11.NewAttribute(p11.CKA_UNWRAP, false),
		p11.NewAttribute(p11.CKA_DERIVE, false),
	)
	var mech uint
	switch alg {
	case keys.ECDSAP256, keys.ECDSAP384:
		oid := oidP256
		if alg == keys.ECDSAP384 {
			oid = oidP384
		}
		params, _ := asn1.Marshal(oid)
		mech = p11.CKM_EC_KEY_PAIR_GEN
		pub = append(pub, p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC), p11.NewAttribute(p11.CKA_EC_PARAMS, params))
		priv = append(priv, p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC))
	case keys.Ed25519:
		params, _ := asn1.Marshal(oidEd25519)
		mech = ckmECEdwardsKeyPairGen
		pub = append(pub, p11.NewAttribute(p11.CKA_KEY_TYPE, ckkECEdwards), p11.NewAttribute(p11.CKA_EC_PARAMS, params))
		priv = append(priv, p11.NewAttribute(p11.CKA_KEY_TYPE, ckkECEdwards))
	case keys.RSA3072:
		mech = p11.CKM_RSA_PKCS_KEY_PAIR_GEN
		pub = append(pub, p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_RSA),
			p11.NewAttribute(p11.CKA_MODULUS_BITS, 3072),
			p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, big.NewInt(rsaPublicExponent).Bytes()))
		priv = append(priv, p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_RSA))
	default:
		return nil, fmt.Errorf("keys/pkcs11: %w %q", keys.ErrUnsupported, alg)
	}
	var key *Key
	err := t.session(func(s p11.SessionHandle) error {
		pubH, privH, err := t.ctx.GenerateKeyPair(s, []*p11.Mechanism{p11.NewMechanism(mech, nil)}, pub, priv)
		if err != nil {
			return fmt.Errorf("keys/pkcs11: generating a %s key in token %q: %w", alg, t.cfg.Token, err)
		}
		pk, err := t.publicKey(s, pubH)
		if err != nil {
			return err
		}
		key = &Key{t: t, priv: privH, pub: pk, uri: URI{Token: t.cfg.Token, Object: label, ID: id}}
		return nil
	})
	return key, err
}

// Find finds a key by its URI: the private key with the URI's id (and
// label, when it names one), and its public key with the same id.
func (t *Token) Find(u URI) (*Key, error) {
	if u.Token != t.cfg.Token {
		return nil, fmt.Errorf("keys/pkcs11: key %s is in token %q, but token %q is configured", u, u.Token, t.cfg.Token)
	}
	var key *Key
	err := t.session(func(s p11.SessionHandle) error {
		privH, err := t.findOne(s, p11.CKO_PRIVATE_KEY, u)
		if err != nil {
			return err
		}
		pubH, err := t.findOne(s, p11.CKO_PUBLIC_KEY, u)
		if err != nil {
			return err
		}
		pk, err := t.publicKey(s, pubH)
		if err != nil {
			return err
		}
		key = &Key{t: t, priv: privH, pub: pk, uri: u}
		return nil
	})
	return key, err
}

func (t *Token) findOne(s p11.SessionHandle, class uint, u URI) (p11.ObjectHandle, error) {
	tmpl := []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, class)}
	if len(u.ID) > 0 {
		tmpl = append(tmpl, p11.NewAttribute(p11.CKA_ID, u.ID))
	}
	if u.Object != "" {
		tmpl = append(tmpl, p11.NewAttribute(p11.CKA_LABEL, u.Object))
	}
	if err := t.ctx.FindObjectsInit(s, tmpl); err != nil {
		return 0, fmt.Errorf("keys/pkcs11: searching token %q: %w", t.cfg.Token, err)
	}
	objs, _, err := t.ctx.FindObjects(s, 2)
	if ferr := t.ctx.FindObjectsFinal(s); err == nil {
		err = ferr
	}
	if err != nil {
		return 0, fmt.Errorf("keys/pkcs11: searching token %q: %w", t.cfg.Token, err)
	}
	what := "private"
	if class == p11.CKO_PUBLIC_KEY {
		what = "public"
	}
	switch len(objs) {
	case 0:
		return 0, fmt.Errorf("keys/pkcs11: no %s key %s in token %q: was the token re-initialised, or is this the wrong token?", what, u, t.cfg.Token)
	case 1:
		return objs[0], nil
	}
	return 0, fmt.Errorf("keys/pkcs11: more than one %s key matches %s in token %q", what, u, t.cfg.Token)
}

// publicKey reads a public key object.
func (t *Token) publicKey(s p11.SessionHandle, h p11.ObjectHandle) (crypto.PublicKey, error) {
	attrs, err := t.ctx.GetAttributeValue(s, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_KEY_TYPE, nil)})
	if err != nil || len(attrs) != 1 {
		return nil, fmt.Errorf("keys/pkcs11: reading a public key's type: %v", err)
	}
	kt := bytesToUint(attrs[0].Value)
	switch kt {
	case p11.CKK_RSA:
		a, err := t.ctx.GetAttributeValue(s, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_MODULUS, nil), p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, nil)})
		if err != nil {
			return nil, fmt.Errorf("keys/pkcs11: reading an RSA public key: %w", err)
		}
		e := new(big.Int).SetBytes(a[1].Value)
		if !e.IsInt64() || e.Int64() > 1<<31-1 {
			return nil, errors.New("keys/pkcs11: the RSA public exponent is out of range")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(a[0].Value), E: int(e.Int64())}, nil
	case p11.CKK_EC, ckkECEdwards:
		a, err := t.ctx.GetAttributeValue(s, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_EC_PARAMS, nil), p11.NewAttribute(p11.CKA_EC_POINT, nil)})
		if err != nil {
			return nil, fmt.Errorf("keys/pkcs11: reading an EC public key: %w", err)
		}
		point := a[1].Value
		// CKA_EC_POINT is a DER OCTET STRING holding the point.
		var inner []byte
		if rest, err := asn1.Unmarshal(point, &inner); err == nil && len(rest) == 0 {
			point = inner
		}
		var oid asn1.ObjectIdentifier
		if _, err := asn1.Unmarshal(a[0].Value, &oid); err != nil {
			var name string
			if _, err := asn1.Unmarshal(a[0].Value, &name); err == nil && name == "edwards25519" {
				oid = oidEd25519
			}
		}
		switch {
		case oid.Equal(oidEd25519):
			if len(point) != ed25519.PublicKeySize {
				return nil, errors.New("keys/pkcs11: the Ed25519 public key has the wrong size")
			}
			return ed25519.PublicKey(point), nil
		case oid.Equal(oidP256):
			return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
		case oid.Equal(oidP384):
			return ecdsa.ParseUncompressedPublicKey(elliptic.P384(), point)
		}
		return nil, fmt.Errorf("keys/pkcs11: the token's key is on curve %v, which mica does not use", oid)
	}
	return nil, fmt.Errorf("keys/pkcs11: the token's key has key type %#x, which mica does not use", kt)
}

func bytesToUint(b []byte) uint {
	// PKCS#11 CK_ULONG values come back in the platform's byte order and
	// size; every platform mica runs on is little-endian.
	var v uint
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint(b[i])
	}
	return v
}

// DigestInfo prefixes of PKCS #1 v1.5 (RFC 8017 9.2 note 1).
var digestInfo = map[crypto.Hash][]byte{
	crypto.SHA256: {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
	crypto.SHA384: {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30},
	crypto.SHA512: {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
}

// Sign signs digest (ECDSA, RSA PKCS #1 v1.5) or the whole message
// (Ed25519) inside the token, as crypto.Signer says.
func (k *Key) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	var mech uint
	msg := digest
	switch pub := k.pub.(type) {
	case *ecdsa.PublicKey:
		if opts.HashFunc() == 0 || len(digest) != opts.HashFunc().Size() {
			return nil, errors.New("keys/pkcs11: ECDSA signs a digest of the size its hash names")
		}
		mech = p11.CKM_ECDSA
	case *rsa.PublicKey:
		if _, pss := opts.(*rsa.PSSOptions); pss {
			return nil, errors.New("keys/pkcs11: RSA-PSS is not supported: mica signs with PKCS #1 v1.5")
		}
		prefix, ok := digestInfo[opts.HashFunc()]
		if !ok || len(digest) != opts.HashFunc().Size() {
			return nil, fmt.Errorf("keys/pkcs11: RSA signing with hash %v is not supported", opts.HashFunc())
		}
		mech, msg = p11.CKM_RSA_PKCS, append(append([]byte(nil), prefix...), digest...)
	case ed25519.PublicKey:
		if o, ok := opts.(*ed25519.Options); (ok && (o.Context != "" || o.Hash != 0)) || opts.HashFunc() != 0 {
			return nil, errors.New("keys/pkcs11: only pure Ed25519 (no pre-hash, no context) is supported")
		}
		mech = ckmEdDSA
	default:
		return nil, fmt.Errorf("keys/pkcs11: cannot sign with a %T key", pub)
	}
	var sig []byte
	err := k.t.session(func(s p11.SessionHandle) error {
		if err := k.t.ctx.SignInit(s, []*p11.Mechanism{p11.NewMechanism(mech, nil)}, k.priv); err != nil {
			return fmt.Errorf("keys/pkcs11: signing with %s: %w", k.uri.Object, err)
		}
		out, err := k.t.ctx.Sign(s, msg)
		if err != nil {
			return fmt.Errorf("keys/pkcs11: signing with %s: %w", k.uri.Object, err)
		}
		sig = out
		return nil
	})
	if err != nil {
		return nil, err
	}
	if _, ok := k.pub.(*ecdsa.PublicKey); ok {
		return ecdsaDER(sig)
	}
	return sig, nil
}

// ecdsaDER turns PKCS#11's r‖s into the ASN.1 form Go and X.509 use.
func ecdsaDER(raw []byte) ([]byte, error) {
	if len(raw) == 0 || len(raw)%2 != 0 {
		return nil, errors.New("keys/pkcs11: the token returned a malformed ECDSA signature")
	}
	n := len(raw) / 2
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1BigInt(new(big.Int).SetBytes(raw[:n]))
		b.AddASN1BigInt(new(big.Int).SetBytes(raw[n:]))
	})
	return b.Bytes()
}

// Destroy deletes the key pair u names from the token. mica destroys only
// keys it made for a step that did not happen; CA keys that served stay.
func (t *Token) Destroy(u URI) error {
	if u.Token != t.cfg.Token || len(u.ID) == 0 {
		return fmt.Errorf("keys/pkcs11: will not destroy %s: not a key of token %q named by its id", u, t.cfg.Token)
	}
	return t.session(func(s p11.SessionHandle) error {
		for _, class := range []uint{p11.CKO_PRIVATE_KEY, p11.CKO_PUBLIC_KEY} {
			h, err := t.findOne(s, class, u)
			if err != nil {
				return err
			}
			if err := t.ctx.DestroyObject(s, h); err != nil {
				return fmt.Errorf("keys/pkcs11: destroying %s: %w", u, err)
			}
		}
		return nil
	})
}
