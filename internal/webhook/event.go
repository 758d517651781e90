package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// TypePrefix starts every CloudEvents type mica sends: the type is the
// prefix and the audit log's action, e.g. "mica.cert.issued".
const TypePrefix = "mica."

// ContentType is the CloudEvents structured mode JSON media type.
const ContentType = "application/cloudevents+json"

// CloudEvent is one event in the CloudEvents 1.0 JSON format (structured
// mode): the envelope and mica's data.
type CloudEvent struct {
	SpecVersion     string `json:"specversion"`
	ID              string `json:"id"`
	Source          string `json:"source"`
	Type            string `json:"type"`
	Subject         string `json:"subject,omitempty"`
	Time            string `json:"time"`
	DataContentType string `json:"datacontenttype"`
	Data            Data   `json:"data"`
}

// Data is an audit log event as receivers get it.
type Data struct {
	// Seq is the event's sequence number in mica's log; with the source it
	// identifies the event, and it is the CloudEvent's id.
	Seq         int64        `json:"seq"`
	LeafIndex   int64        `json:"leaf_index"`
	Action      string       `json:"action"`
	Actor       string       `json:"actor,omitempty"`
	SourceAddr  string       `json:"source_addr,omitempty"`
	Serial      string       `json:"serial,omitempty"`
	Fingerprint string       `json:"fingerprint,omitempty"`
	Identity    string       `json:"identity,omitempty"`
	Profile     string       `json:"profile,omitempty"`
	Outcome     string       `json:"outcome,omitempty"`
	Detail      string       `json:"detail,omitempty"`
	Certificate *Certificate `json:"certificate,omitempty"`
}

// Certificate is the inventory record of the certificate an event names,
// when mica issued it.
type Certificate struct {
	SANs      []string  `json:"sans"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Owner     string    `json:"owner,omitempty"`
	Status    string    `json:"status"`
}

// EventID is the CloudEvent id of an audit event: its sequence number,
// which is unique within one mica's log (the source names the log).
func EventID(seq int64) string { return strconv.FormatInt(seq, 10) }

// NewCloudEvent shapes an audit event; cert is its certificate's record,
// or nil.
func NewCloudEvent(source string, ev store.Event, cert *store.Certificate) CloudEvent {
	d := Data{Seq: ev.Seq, LeafIndex: ev.LeafIndex, Action: string(ev.Action), Actor: ev.Actor, SourceAddr: ev.Source,
		Serial: ev.Serial, Fingerprint: ev.Fingerprint, Identity: ev.Identity, Profile: ev.Profile, Outcome: ev.Outcome, Detail: ev.Detail}
	if cert != nil {
		sans := cert.SANs
		if sans == nil {
			sans = []string{}
		}
		d.Certificate = &Certificate{SANs: sans, NotBefore: cert.NotBefore.UTC(), NotAfter: cert.NotAfter.UTC(), Owner: cert.Owner, Status: string(cert.Status)}
	}
	subject := ev.Identity
	if subject == "" {
		subject = ev.Serial
	}
	return CloudEvent{SpecVersion: "1.0", ID: EventID(ev.Seq), Source: source, Type: TypePrefix + string(ev.Action),
		Subject: subject, Time: ev.Time.UTC().Format(time.RFC3339Nano), DataContentType: "application/json", Data: d}
}

// Signature headers, as the Standard Webhooks specification names them:
// the id (the CloudEvent id), the time of signing in Unix seconds, and
// "v1," followed by the base64 HMAC-SHA256 of "id.timestamp.body".
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// Sign returns the signature header's value for one delivery.
func Sign(secret []byte, id string, ts time.Time, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	fmt.Fprintf(mac, "%s.%d.", id, ts.Unix())
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Verify checks a delivery's signature headers against secret, refusing a
// timestamp further than tolerance from now (replays). Receivers written
// in Go can use it as it is; it is also what the tests check with.
func Verify(secret []byte, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	id, tsText, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if id == "" || tsText == "" || sigs == "" {
		return errors.New("webhook: the delivery lacks webhook-id, webhook-timestamp or webhook-signature")
	}
	secs, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook: webhook-timestamp %q is not Unix seconds", tsText)
	}
	ts := time.Unix(secs, 0)
	if d := now.Sub(ts); d > tolerance || d < -tolerance {
		return fmt.Errorf("webhook: the delivery was signed at %s, more than %s from now: a replay, or a clock to fix", ts.UTC().Format(time.RFC3339), tolerance)
	}
	want := Sign(secret, id, ts, body)
	for _, s := range strings.Fields(sigs) {
		if hmac.Equal([]byte(s), []byte(want)) {
			return nil
		}
	}
	return errors.New("webhook: no signature matches: the secret differs, or the body was changed")
}

// ParseSecret reads a signing secret as written in a secret file:
// "whsec_" and base64 (the Standard Webhooks form, which `mica webhook
// secret` prints), or any other text of at least 32 bytes, used as it is.
func ParseSecret(text string) ([]byte, error) {
	text = strings.TrimSpace(text)
	if b64, ok := strings.CutPrefix(text, "whsec_"); ok {
		key, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, fmt.Errorf("webhook: the secret after whsec_ is not base64: %v", err)
		}
		if len(key) < 24 {
			return nil, fmt.Errorf("webhook: the secret is %d bytes; use at least 24 (make one with `mica webhook secret`)", len(key))
		}
		return key, nil
	}
	if len(text) < 32 {
		return nil, errors.New("webhook: the secret is shorter than 32 characters: make one with `mica webhook secret`")
	}
	return []byte(text), nil
}

func encode(ce CloudEvent) ([]byte, error) {
	return json.Marshal(ce)
}
