// Package leaf is the canonical encoding of one audit event as a Merkle
// leaf, and its RFC 6962 leaf hash. It is shared by the store engines (which
// hash each event in the caller's goroutine, before the group commit) and by
// the auditlog package (which recomputes the hashes when verifying), so the
// two can never disagree about what a leaf is.
//
// Encoding, version 1: the byte 0x01 followed by one JSON object with
// exactly these members in this order, no insignificant whitespace, strings
// escaped as Go's encoding/json does with HTML escaping off (invalid UTF-8
// becomes U+FFFD):
//
//	{"time":<unix microseconds, UTC>,"actor":"…","source":"…","action":"…",
//	 "serial":"…","fingerprint":"…","identity":"…","profile":"…",
//	 "outcome":"…","detail":"…"}
//
// The event's seq and leaf index are not part of the leaf: they are assigned
// inside the commit, after the hash was computed, and the leaf's position in
// the tree already says where it is. The leaf hash is SHA-256(0x00 ‖ encoding).
package leaf

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/mica-pki/mica/internal/store"
)

// Version1 is the first byte of every version-1 encoding.
const Version1 byte = 0x01

// HashSize is the size of a leaf hash.
const HashSize = sha256.Size

// record fixes the member order of the JSON object.
type record struct {
	Time        int64  `json:"time"`
	Actor       string `json:"actor"`
	Source      string `json:"source"`
	Action      string `json:"action"`
	Serial      string `json:"serial"`
	Fingerprint string `json:"fingerprint"`
	Identity    string `json:"identity"`
	Profile     string `json:"profile"`
	Outcome     string `json:"outcome"`
	Detail      string `json:"detail"`
}

// Encode returns the canonical version-1 encoding of ev. Times are taken to
// the microsecond, as the stores keep them.
func Encode(ev *store.Event) []byte {
	var b bytes.Buffer
	b.WriteByte(Version1)
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	// Encoding a struct of strings and an integer cannot fail.
	_ = enc.Encode(record{
		Time: ev.Time.UnixMicro(), Actor: ev.Actor, Source: ev.Source, Action: string(ev.Action),
		Serial: ev.Serial, Fingerprint: ev.Fingerprint, Identity: ev.Identity, Profile: ev.Profile,
		Outcome: ev.Outcome, Detail: ev.Detail,
	})
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// Decode reads an encoding made by Encode into an Event (without Seq or
// leaf index).
func Decode(data []byte) (store.Event, error) {
	if len(data) == 0 || data[0] != Version1 {
		return store.Event{}, errors.New("leaf: unknown encoding version: upgrade mica to read this log")
	}
	dec := json.NewDecoder(bytes.NewReader(data[1:]))
	dec.DisallowUnknownFields()
	var r record
	if err := dec.Decode(&r); err != nil {
		return store.Event{}, fmt.Errorf("leaf: malformed version-1 leaf: %w", err)
	}
	return store.Event{
		Time: timeFromMicros(r.Time), Actor: r.Actor, Source: r.Source, Action: store.Action(r.Action),
		Serial: r.Serial, Fingerprint: r.Fingerprint, Identity: r.Identity, Profile: r.Profile,
		Outcome: r.Outcome, Detail: r.Detail,
	}, nil
}

// Hash is the RFC 6962 leaf hash of ev: SHA-256(0x00 ‖ Encode(ev)).
func Hash(ev *store.Event) []byte {
	h := sha256.New()
	h.Write([]byte{0})
	h.Write(Encode(ev))
	return h.Sum(nil)
}
