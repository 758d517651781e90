package sqlrec

import (
	"fmt"

	"github.com/mica-pki/mica/internal/store"
)

// Refusal says why one operation of a batch failed on its own, having
// written nothing, while the rest of the batch commits. Engines find it
// their own way (a check before the write, or what a statement returned);
// the error it becomes is the same on every engine.
type Refusal int

const (
	// RefusedTokenUsed: the issuance's token was consumed before.
	RefusedTokenUsed Refusal = iota + 1
	// RefusedCertExists: the issuance's serial or fingerprint is recorded already.
	RefusedCertExists
	// RefusedNotFound: Revoke found no such certificate; Allow found the
	// identity not denied.
	RefusedNotFound
	// RefusedAlreadyRevoked: Revoke found the certificate revoked before.
	RefusedAlreadyRevoked
	// RefusedAlreadyDenied: Deny found the identity denied before.
	RefusedAlreadyDenied
)

// Refuse is the error an operation gets when it fails alone for why; engine
// names the engine, as the first word of the message.
func (op *Op) Refuse(engine string, why Refusal) error {
	switch why {
	case RefusedTokenUsed:
		return fmt.Errorf("%s: enrollment token %s: %w", engine, op.Token.JTI, store.ErrTokenUsed)
	case RefusedCertExists:
		return fmt.Errorf("%s: certificate serial %s or fingerprint %s is already recorded: look it up before retrying, or issue with a fresh serial",
			engine, op.Cert.Serial, op.Cert.Fingerprint)
	case RefusedNotFound:
		if op.Kind == KindAllow {
			return fmt.Errorf("%s: allow %s: it is not denied: %w", engine, op.Identity, store.ErrNotFound)
		}
		return fmt.Errorf("%s: revoke certificate %s: %w", engine, op.Serial, store.ErrNotFound)
	case RefusedAlreadyRevoked:
		return fmt.Errorf("%s: revoke certificate %s: %w", engine, op.Serial, store.ErrAlreadyRevoked)
	case RefusedAlreadyDenied:
		return fmt.Errorf("%s: deny %s: %w", engine, op.Identity, store.ErrAlreadyDenied)
	}
	return fmt.Errorf("%s: operation refused for unknown reason %d", engine, why)
}
