package api

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/store"
)

// The inventory is paged by key: each page of GET /v1/certificates ends
// with a cursor naming its last certificate's place in the inventory's
// order (NotAfter, then serial), and the next page is read from the index
// after that place, at the same cost however deep it is. An offset would
// read and skip every row before the page.
//
// A cursor is opaque to clients: base64url (no padding) of
//
//	version (1 byte, 1) | not_after (8 bytes, Unix µs, big-endian) |
//	serial length (1 byte) | serial (lower-case hex text) |
//	filter tag (8 bytes) | check (4 bytes)
//
// The filter tag is a hash of the filter the first page was asked with
// (identity, profile, status, expiring_within): a cursor used with another
// filter is refused rather than silently listing a different set from the
// middle. The check is a hash of everything before it, so that a cursor
// damaged in transit or edited by hand is refused rather than read as
// another place. Neither is a secret: a cursor grants nothing (whoever may
// list may start anywhere, and each page is authorized on its own), so
// cursors are not signed and stay valid across restarts and replicas.
const (
	cursorVersion  = 1
	cursorTagLen   = 8
	cursorCheckLen = 4
	maxSerialLen   = 40 // hex digits of a 20-octet serial (RFC 5280 4.1.2.2)
	maxCursorLen   = 128
)

// listKey is what a cursor is bound to: the filter of GET
// /v1/certificates, as parsed (so "7d" and "168h" are the same filter).
type listKey struct {
	identity, profile, status string
	expiringWithin            time.Duration
}

// tag is the filter's 8-byte fingerprint.
func (k listKey) tag() []byte {
	h := sha256.New()
	// Lengths first, so that no two filters write the same bytes.
	for _, s := range []string{k.identity, k.profile, k.status} {
		binary.Write(h, binary.BigEndian, uint32(len(s)))
		h.Write([]byte(s))
	}
	binary.Write(h, binary.BigEndian, int64(k.expiringWithin))
	return h.Sum(nil)[:cursorTagLen]
}

// encodeCursor makes the cursor of the page that ends at last.
func encodeCursor(k listKey, last store.Position) string {
	b := []byte{cursorVersion}
	b = binary.BigEndian.AppendUint64(b, uint64(last.NotAfter.UnixMicro()))
	b = append(b, byte(len(last.Serial)))
	b = append(b, last.Serial...)
	b = append(b, k.tag()...)
	sum := sha256.Sum256(b)
	b = append(b, sum[:cursorCheckLen]...)
	return base64.RawURLEncoding.EncodeToString(b)
}

var (
	// errCursorDamaged: the cursor is not one this server made.
	errCursorDamaged = errors.New("cursor is damaged or was not made by this server: list again without cursor to start from the first page")
	// errCursorFilter: the cursor was made for another filter.
	errCursorFilter = errors.New("cursor belongs to a listing with another filter: repeat the first page's identity, profile, status and expiring_within with it, or list again without cursor to start from the first page")
)

// decodeCursor reads a cursor made by encodeCursor for k, strictly: any
// other text is errCursorDamaged, and a cursor made for another filter is
// errCursorFilter.
func decodeCursor(s string, k listKey) (store.Position, error) {
	if len(s) > maxCursorLen {
		return store.Position{}, errCursorDamaged
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	const fixed = 1 + 8 + 1 + cursorTagLen + cursorCheckLen
	if err != nil || len(b) < fixed+1 || b[0] != cursorVersion {
		return store.Position{}, errCursorDamaged
	}
	body, check := b[:len(b)-cursorCheckLen], b[len(b)-cursorCheckLen:]
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:cursorCheckLen], check) {
		return store.Position{}, errCursorDamaged
	}
	n := int(b[9])
	if n == 0 || n > maxSerialLen || len(b) != fixed+n {
		return store.Position{}, errCursorDamaged
	}
	serial := string(b[10 : 10+n])
	for _, c := range serial {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return store.Position{}, errCursorDamaged
		}
	}
	if !bytes.Equal(b[10+n:10+n+cursorTagLen], k.tag()) {
		return store.Position{}, errCursorFilter
	}
	us := int64(binary.BigEndian.Uint64(b[1:9]))
	return store.Position{NotAfter: time.UnixMicro(us).UTC(), Serial: serial}, nil
}

// CertificatesCursor is the cursor GET /v1/certificates would answer for
// a page of f's listing that ended at last: for tools (the scale bench)
// that start a listing at a place found another way.
func CertificatesCursor(f client.ListFilter, last store.Position) (string, error) {
	k := listKey{identity: f.Identity, profile: f.Profile, status: f.Status}
	if f.ExpiringWithin != "" {
		d, err := duration.Parse(f.ExpiringWithin)
		if err != nil {
			return "", fmt.Errorf("api: expiring within %q: %w", f.ExpiringWithin, err)
		}
		k.expiringWithin = d
	}
	if last.Serial == "" || len(last.Serial) > maxSerialLen {
		return "", errors.New("api: a cursor needs the serial of the page's last certificate")
	}
	return encodeCursor(k, last), nil
}
