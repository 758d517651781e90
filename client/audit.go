package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// AuditEvent is one audit log entry. LeafHash is the server's record of the
// leaf hash; verifiers recompute it from the other fields.
type AuditEvent struct {
	Seq         int64     `json:"seq"`
	LeafIndex   int64     `json:"leaf_index"`
	LeafHash    []byte    `json:"leaf_hash,omitempty"` // base64 in JSON
	Time        time.Time `json:"time"`
	Actor       string    `json:"actor"`
	Source      string    `json:"source,omitempty"`
	Action      string    `json:"action"`
	Serial      string    `json:"serial,omitempty"`
	Fingerprint string    `json:"fingerprint,omitempty"`
	Identity    string    `json:"identity,omitempty"`
	Profile     string    `json:"profile,omitempty"`
	Outcome     string    `json:"outcome"`
	Detail      string    `json:"detail,omitempty"`
}

// AuditEvents is a page of events or leaves.
type AuditEvents struct {
	Events []AuditEvent `json:"events"`
}

// AuditKey is the log's public key (GET /v1/audit/key, public).
type AuditKey struct {
	VerifierKey string `json:"verifier_key"` // C2SP note verifier key
}

// AuditCheckpoint is a signed checkpoint; Note is the C2SP signed note.
type AuditCheckpoint struct {
	Size int64     `json:"size"`
	Note string    `json:"note"`
	Time time.Time `json:"time"`
}

// AuditCheckpoints is a page of checkpoints, smallest first.
type AuditCheckpoints struct {
	Checkpoints []AuditCheckpoint `json:"checkpoints"`
}

// AuditProof proves a certificate's issuance event is in the log.
type AuditProof struct {
	Event      AuditEvent      `json:"event"`
	Checkpoint AuditCheckpoint `json:"checkpoint"`
	Hashes     [][]byte        `json:"hashes"`
}

// AuditConsistency proves one tree size extends another.
type AuditConsistency struct {
	Size1  int64    `json:"size1"`
	Size2  int64    `json:"size2"`
	Hashes [][]byte `json:"hashes"`
}

// AuditFilter selects events; zero fields select everything.
type AuditFilter struct {
	AfterSeq int64
	Action   string
	Identity string
	Since    time.Time
	Limit    int
}

// AuditKey fetches the log's public key.
func (c *Client) AuditKey(ctx context.Context) (*AuditKey, error) {
	var out AuditKey
	return &out, c.do(ctx, http.MethodGet, "/v1/audit/key", "", nil, &out)
}

// AuditCheckpoint fetches the latest checkpoint (auditors and up).
func (c *Client) AuditCheckpoint(ctx context.Context) (*AuditCheckpoint, error) {
	var out AuditCheckpoint
	return &out, c.do(ctx, http.MethodGet, "/v1/audit/checkpoint", "", nil, &out)
}

// AuditCheckpoints lists checkpoints larger than afterSize.
func (c *Client) AuditCheckpoints(ctx context.Context, afterSize int64, limit int) ([]AuditCheckpoint, error) {
	var out AuditCheckpoints
	err := c.do(ctx, http.MethodGet, fmt.Sprintf("/v1/audit/checkpoints?after_size=%d&limit=%d", afterSize, limit), "", nil, &out)
	return out.Checkpoints, err
}

// AuditLeaves reads leaves from start, in leaf order.
func (c *Client) AuditLeaves(ctx context.Context, start int64, limit int) ([]AuditEvent, error) {
	var out AuditEvents
	err := c.do(ctx, http.MethodGet, fmt.Sprintf("/v1/audit/leaves?start=%d&limit=%d", start, limit), "", nil, &out)
	return out.Events, err
}

// AuditEvents searches events, oldest first.
func (c *Client) AuditEvents(ctx context.Context, f AuditFilter) ([]AuditEvent, error) {
	q := url.Values{}
	if f.AfterSeq > 0 {
		q.Set("after_seq", fmt.Sprint(f.AfterSeq))
	}
	if f.Action != "" {
		q.Set("action", f.Action)
	}
	if f.Identity != "" {
		q.Set("identity", f.Identity)
	}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.UTC().Format(time.RFC3339Nano))
	}
	if f.Limit > 0 {
		q.Set("limit", fmt.Sprint(f.Limit))
	}
	var out AuditEvents
	err := c.do(ctx, http.MethodGet, "/v1/audit/events?"+q.Encode(), "", nil, &out)
	return out.Events, err
}

// AuditProof fetches the inclusion proof of a certificate's issuance event
// (auditors, or the holder for its own certificate).
func (c *Client) AuditProof(ctx context.Context, serial string) (*AuditProof, error) {
	var out AuditProof
	return &out, c.do(ctx, http.MethodGet, "/v1/audit/proof/"+url.PathEscape(serial), "", nil, &out)
}

// AuditConsistency fetches a consistency proof between two tree sizes.
func (c *Client) AuditConsistency(ctx context.Context, size1, size2 int64) (*AuditConsistency, error) {
	var out AuditConsistency
	return &out, c.do(ctx, http.MethodGet, fmt.Sprintf("/v1/audit/consistency?size1=%d&size2=%d", size1, size2), "", nil, &out)
}
