package acme

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// Anti-replay nonces (RFC 8555 §6.5) are made without a write, so that
// anyone may ask for them (HEAD newNonce is unauthenticated) at no cost to
// the database: a nonce is the second it was made, 16 random bytes and an
// HMAC-SHA256 over both under the key of the hour it was made in. Keys are
// random, one per hour, and kept in the store (ACMENonceKey), so every
// server makes and checks the same nonces and a key is forgotten two hours
// after its last use. Only a nonce's use is written (UseACMENonce): a
// unique insert, so each nonce works once across servers.
const (
	nonceLifetime = time.Hour
	// nonceEpoch is how long one key makes nonces.
	nonceEpoch = time.Hour
	// clockSkew is how far servers' clocks may disagree: a nonce made up
	// to this far in the future is accepted, and its use is remembered
	// this much longer than its lifetime.
	clockSkew = time.Minute

	nonceVersion  = 1
	nonceTimeEnd  = 1 + 8                  // version, then seconds since 1970 (big-endian)
	nonceRandEnd  = nonceTimeEnd + 16      // then randomness
	nonceLen      = nonceRandEnd + 16      // then the truncated MAC
	nonceKeyBytes = 32                     // HMAC-SHA256 key
	nonceMACLabel = "mica acme nonce v1\n" // domain separation for the MAC
)

// nonceEncoding rejects the spellings that differ only in unused trailing
// bits, so that one nonce has one spelling and one use record.
var nonceEncoding = base64.RawURLEncoding.Strict()

// nonces makes and checks nonces; its keys are cached per epoch.
type nonces struct {
	store Store
	now   func() time.Time
	rand  io.Reader

	mu   sync.Mutex
	keys map[int64][]byte
}

func newNonces(st Store, now func() time.Time, rand io.Reader) *nonces {
	return &nonces{store: st, now: now, rand: rand, keys: map[int64][]byte{}}
}

func epochOf(t time.Time) int64 { return t.Unix() / int64(nonceEpoch/time.Second) }

// key is the key of epoch: from the cache, else from the store (which
// keeps the first key any server offered for it).
func (n *nonces) key(ctx context.Context, epoch int64) ([]byte, error) {
	n.mu.Lock()
	k, ok := n.keys[epoch]
	n.mu.Unlock()
	if ok {
		return k, nil
	}
	fresh := make([]byte, nonceKeyBytes)
	if _, err := io.ReadFull(n.rand, fresh); err != nil {
		return nil, fmt.Errorf("acme: reading randomness for a nonce key: %w", err)
	}
	k, err := n.store.ACMENonceKey(ctx, epoch, fresh)
	if err != nil {
		return nil, err
	}
	if len(k) < nonceKeyBytes {
		return nil, fmt.Errorf("acme: the stored nonce key of epoch %d is %d bytes, want %d: the acme_nonce_keys table was changed by hand", epoch, len(k), nonceKeyBytes)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	now := epochOf(n.now())
	for e := range n.keys {
		if e < now-2 || e > now+1 {
			delete(n.keys, e)
		}
	}
	n.keys[epoch] = k
	return k, nil
}

func nonceMAC(key, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(nonceMACLabel))
	m.Write(body)
	return m.Sum(nil)[:nonceLen-nonceRandEnd]
}

// make returns a fresh nonce. It writes nothing (but the hour's key, once
// per hour and server).
func (n *nonces) make(ctx context.Context) (string, error) {
	now := n.now()
	var raw [nonceLen]byte
	raw[0] = nonceVersion
	binary.BigEndian.PutUint64(raw[1:nonceTimeEnd], uint64(now.Unix()))
	if _, err := io.ReadFull(n.rand, raw[nonceTimeEnd:nonceRandEnd]); err != nil {
		return "", fmt.Errorf("acme: reading randomness for a nonce: %w", err)
	}
	key, err := n.key(ctx, epochOf(now))
	if err != nil {
		return "", err
	}
	copy(raw[nonceRandEnd:], nonceMAC(key, raw[:nonceRandEnd]))
	return nonceEncoding.EncodeToString(raw[:]), nil
}

// use accepts a nonce this service made, within its lifetime, once. The
// checks that need no write come first, so a forged or stale nonce costs
// nothing but a refusal.
func (n *nonces) use(ctx context.Context, nonce string) *problem {
	bad := func(format string, args ...any) *problem {
		return newProblem(errBadNonce, http.StatusBadRequest, format+": retry with the nonce in this response's Replay-Nonce header", args...)
	}
	raw, err := nonceEncoding.DecodeString(nonce)
	if err != nil || len(raw) != nonceLen || raw[0] != nonceVersion {
		return bad("nonce %q was not made by this server", truncate(nonce, 64))
	}
	made := time.Unix(int64(binary.BigEndian.Uint64(raw[1:nonceTimeEnd])), 0)
	now := n.now()
	if made.After(now.Add(clockSkew)) || now.Sub(made) > nonceLifetime {
		return bad("nonce %q has expired", nonce)
	}
	key, err := n.key(ctx, epochOf(made))
	if err != nil {
		return internal(err)
	}
	if !hmac.Equal(raw[nonceRandEnd:], nonceMAC(key, raw[:nonceRandEnd])) {
		return bad("nonce %q was not made by this server", nonce)
	}
	err = n.store.UseACMENonce(ctx, nonce, made.Add(nonceLifetime+clockSkew), now)
	switch {
	case errors.Is(err, store.ErrConflict):
		return bad("nonce %q was used before", nonce)
	case err != nil:
		return internal(err)
	}
	return nil
}
