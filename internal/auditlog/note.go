package auditlog

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// Signer signs checkpoints with the log's Ed25519 key. It implements
// note.Signer over any Ed25519 crypto.Signer, so the key can stay wherever
// mica's other keys are kept (a sealed file, or a PKCS#11 token that signs
// with CKM_EDDSA).
type Signer struct {
	name string
	hash uint32
	key  crypto.Signer
	vkey string
}

var _ note.Signer = (*Signer)(nil)

// NewSigner returns a signer whose key is known as name (the log's origin,
// e.g. "example.org/mica/audit").
func NewSigner(name string, key crypto.Signer) (*Signer, error) {
	pub, ok := key.Public().(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("auditlog: the log key is a %T key; checkpoints are signed with Ed25519", key.Public())
	}
	vkey, err := note.NewEd25519VerifierKey(name, pub)
	if err != nil {
		return nil, fmt.Errorf("auditlog: log key name %q: %w", name, err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("auditlog: log key: %w", err)
	}
	return &Signer{name: name, hash: v.KeyHash(), key: key, vkey: vkey}, nil
}

// Name implements note.Signer.
func (s *Signer) Name() string { return s.name }

// KeyHash implements note.Signer.
func (s *Signer) KeyHash() uint32 { return s.hash }

// Sign implements note.Signer.
func (s *Signer) Sign(msg []byte) ([]byte, error) { return s.key.Sign(nil, msg, crypto.Hash(0)) }

// VerifierKey is the public key in note verifier-key form
// ("name+hash+base64"), what witnesses and `mica audit verify` pin.
func (s *Signer) VerifierKey() string { return s.vkey }

// Checkpoint is a parsed, signature-checked checkpoint.
type Checkpoint struct {
	Origin string
	Size   int64
	Root   []byte
	Note   []byte // the signed note it was read from
}

// checkpointBody is the C2SP tlog-checkpoint body: origin, size, and the
// base64 root, one per line.
func checkpointBody(origin string, size int64, root []byte) string {
	return fmt.Sprintf("%s\n%d\n%s\n", origin, size, base64.StdEncoding.EncodeToString(root))
}

// SignCheckpoint makes the signed note for a tree of size with root.
func SignCheckpoint(s *Signer, size int64, root []byte) ([]byte, error) {
	n, err := note.Sign(&note.Note{Text: checkpointBody(s.name, size, root)}, s)
	if err != nil {
		return nil, fmt.Errorf("auditlog: sign checkpoint: %w", err)
	}
	return n, nil
}

// ErrForged is returned for a checkpoint not signed by the log key.
var ErrForged = errors.New("auditlog: checkpoint is not signed by this log's key")

// OpenCheckpoint checks a signed note against the log's verifier key and
// parses it. A note signed by any other key is ErrForged.
func OpenCheckpoint(data []byte, vkey string) (Checkpoint, error) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("auditlog: log verifier key %q is malformed: %w", vkey, err)
	}
	n, err := note.Open(data, note.VerifierList(v))
	if err != nil {
		var unverified *note.UnverifiedNoteError
		var invalid *note.InvalidSignatureError
		if errors.As(err, &unverified) || errors.As(err, &invalid) {
			return Checkpoint{}, fmt.Errorf("%w (%v): compare the key with `mica audit checkpoint` output on a trusted server", ErrForged, err)
		}
		return Checkpoint{}, fmt.Errorf("auditlog: checkpoint is not a valid signed note: %w", err)
	}
	lines := strings.SplitN(n.Text, "\n", 4)
	if len(lines) < 4 {
		return Checkpoint{}, errors.New("auditlog: checkpoint body is not origin, size and root on three lines")
	}
	c := Checkpoint{Origin: lines[0], Note: bytes.Clone(data)}
	if c.Origin != v.Name() {
		return Checkpoint{}, fmt.Errorf("auditlog: checkpoint is for log %q, not %q", c.Origin, v.Name())
	}
	if c.Size, err = strconv.ParseInt(lines[1], 10, 64); err != nil || c.Size < 0 {
		return Checkpoint{}, fmt.Errorf("auditlog: checkpoint size %q is not a whole number", lines[1])
	}
	if c.Root, err = base64.StdEncoding.DecodeString(lines[2]); err != nil || len(c.Root) != 32 {
		return Checkpoint{}, fmt.Errorf("auditlog: checkpoint root %q is not a base64 SHA-256 hash", lines[2])
	}
	return c, nil
}
