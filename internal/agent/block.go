package agent

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/renewal"
)

// Block says why the agent cannot keep its credential fresh by itself:
// retrying the same request cannot succeed, so it stops asking the server
// in a loop and waits for an admin. Empty: not blocked.
type Block string

const (
	// BlockExpired: the certificate expired; renewal over mTLS is no
	// longer possible. A new token enrolls again.
	BlockExpired Block = "expired"
	// BlockRevoked: the certificate was revoked. A new token enrolls again.
	BlockRevoked Block = "revoked"
	// BlockUnknown: the server does not know or trust the certificate (a
	// re-initialised CA, another server). A new token enrolls again.
	BlockUnknown Block = "unknown"
	// BlockChainEnded: the profile's max_renewal_chain has passed since
	// the identity first enrolled. A new token starts a new chain.
	BlockChainEnded Block = "chain-ended"
	// BlockDenied: the identity is on the server's deny list. Retried
	// slowly, since an admin may allow it again; a new token also works
	// once it is allowed.
	BlockDenied Block = "denied"
	// BlockRefused: the server refuses the request for another reason
	// (the profile's policy, a TTL beyond its maximum, …). Retried slowly.
	BlockRefused Block = "refused"
	// BlockToken: there is no usable credential, and the token is
	// missing, spent, expired or not accepted. A new token enrolls.
	BlockToken Block = "token"
)

// Blocks lists every Block, for metrics that exist at zero.
var Blocks = []Block{BlockExpired, BlockRevoked, BlockUnknown, BlockChainEnded, BlockDenied, BlockRefused, BlockToken}

// retriesSlowly reports whether the agent still asks the server, at its
// longest backoff, while blocked so: an admin can lift these on the server.
func (b Block) retriesSlowly() bool { return b == BlockDenied || b == BlockRefused }

// blockOf says whether err from the server means that the same request
// cannot succeed later, and why. Errors that are not the server's answer
// (no connection, timeouts), rate limits and server faults are passing.
func blockOf(err error, enrolling bool) Block {
	var p *client.Problem
	if !errors.As(err, &p) {
		return ""
	}
	switch p.Slug() {
	case "certificate-expired":
		return BlockExpired
	case "certificate-revoked":
		return BlockRevoked
	case "renewal-chain-ended":
		return BlockChainEnded
	case "identity-denied":
		return BlockDenied
	case "token-replayed", "token-expired", "token-invalid":
		return BlockToken
	case "unauthenticated":
		if !enrolling {
			return BlockUnknown
		}
	}
	switch {
	case p.Status == http.StatusTooManyRequests, p.Status == http.StatusRequestTimeout, p.Status >= 500, p.Status < 400:
		return ""
	}
	return BlockRefused
}

// advice is the log line for a block: what happened and what to do.
func (a *Agent) advice(b Block, id string, cause error) string {
	newToken := "restart the agent with a new --token"
	if a.cfg.TokenFile != "" {
		newToken = fmt.Sprintf("write a new token to %s (the agent reads it within %s; SIGUSR1 makes it read at once)", a.cfg.TokenFile, a.cfg.TokenPoll)
	}
	mint := fmt.Sprintf("`mica token create --identity %s --profile PROFILE`", orUnknown(id))
	switch b {
	case BlockExpired:
		return fmt.Sprintf("the certificate of %s expired and can no longer be renewed: make a token with %s and %s", id, mint, newToken)
	case BlockRevoked:
		return fmt.Sprintf("the certificate of %s was revoked and cannot be renewed: if the host is trusted again, make a token with %s and %s", id, mint, newToken)
	case BlockUnknown:
		return fmt.Sprintf("the server does not accept the certificate of %s (%v): was the CA re-initialised? make a token with %s and %s", id, cause, mint, newToken)
	case BlockChainEnded:
		return fmt.Sprintf("%s has renewed for as long as its profile's max_renewal_chain allows: a new token starts a new chain: make one with %s and %s", id, mint, newToken)
	case BlockDenied:
		return fmt.Sprintf("%s is on the server's deny list: an admin must run `mica identity allow %s`; the agent retries every %s, and enrolls again when given a new token (%s)", id, id, a.slowRetry(), newToken)
	case BlockRefused:
		return fmt.Sprintf("the server refuses to renew %s (%v): an admin must change its profile or the agent's settings; the agent retries every %s", id, cause, a.slowRetry())
	case BlockToken:
		return fmt.Sprintf("no usable credential and the token cannot be used (%v): make a token with %s and %s", cause, mint, newToken)
	}
	return string(b)
}

// slowRetry is how often a blocked agent that retries slowly asks again.
func (a *Agent) slowRetry() time.Duration {
	s, _ := a.State()
	life := 24 * time.Hour
	if s.Credential != nil {
		life = s.Credential.Leaf().NotAfter.Sub(s.Credential.Leaf().NotBefore)
	}
	return renewal.RetryCap(life, a.cfg.MaxBackoff)
}

func orUnknown(id string) string {
	if id == "" {
		return "ID"
	}
	return id
}
