package api

import (
	"fmt"
	"net/http"
	"time"

	"github.com/mica-pki/mica/internal/authority"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/store"
)

// The /v1/audit endpoints: thin translations to the authority's Audit*
// methods. Only the log's public key is served without authentication.

func (s *server) auditRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/audit/key", s.auditKey)
	mux.HandleFunc("GET /v1/audit/checkpoint", s.authed(s.auditCheckpoint))
	mux.HandleFunc("GET /v1/audit/checkpoints", s.authed(s.auditCheckpoints))
	mux.HandleFunc("GET /v1/audit/leaves", s.authed(s.auditLeaves))
	mux.HandleFunc("GET /v1/audit/events", s.authed(s.auditEvents))
	mux.HandleFunc("GET /v1/audit/proof/{serial}", s.authed(s.auditProof))
	mux.HandleFunc("GET /v1/audit/consistency", s.authed(s.auditConsistency))
}

func (s *server) auditKey(w http.ResponseWriter, r *http.Request) {
	k, err := s.cfg.Authority.AuditKey()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, client.AuditKey{VerifierKey: k})
}

func (s *server) auditCheckpoint(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	c, err := s.cfg.Authority.AuditCheckpoint(r.Context(), p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, wireCheckpoint(c))
}

func (s *server) auditCheckpoints(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	q := newQuery(r)
	after, limit := q.int("after_size", 0, 1<<62), q.int("limit", 0, maxListLimit)
	if q.fail(w) {
		return
	}
	cs, err := s.cfg.Authority.AuditCheckpoints(r.Context(), p, after, int(limit))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := client.AuditCheckpoints{Checkpoints: make([]client.AuditCheckpoint, 0, len(cs))}
	for _, c := range cs {
		out.Checkpoints = append(out.Checkpoints, wireCheckpoint(c))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) auditLeaves(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	q := newQuery(r)
	start, limit := q.int("start", 0, 1<<62), q.int("limit", 0, maxListLimit)
	if q.fail(w) {
		return
	}
	evs, err := s.cfg.Authority.AuditLeaves(r.Context(), p, start, int(limit))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, wireEvents(evs))
}

func (s *server) auditEvents(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	q := newQuery(r)
	f := store.EventFilter{AfterSeq: q.int("after_seq", 0, 1<<62), Limit: int(q.int("limit", 0, maxListLimit)),
		Action: store.Action(q.v.Get("action")), Identity: q.v.Get("identity")}
	if v := q.v.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			q.errs = append(q.errs, fmt.Sprintf("since %q is not an RFC 3339 time like 2026-11-23T10:00:00Z", v))
		}
		f.Since = t
	}
	if q.fail(w) {
		return
	}
	evs, err := s.cfg.Authority.AuditEvents(r.Context(), p, f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, wireEvents(evs))
}

func (s *server) auditProof(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	serial := r.PathValue("serial")
	pr, err := s.cfg.Authority.AuditProof(r.Context(), p, serial)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, client.AuditProof{Event: wireEvent(pr.Event), Checkpoint: wireCheckpoint(pr.Checkpoint), Hashes: pr.Hashes})
}

func (s *server) auditConsistency(w http.ResponseWriter, r *http.Request, p authority.Principal) {
	q := newQuery(r)
	size1, size2 := q.int("size1", 0, 1<<62), q.int("size2", 0, 1<<62)
	if q.fail(w) {
		return
	}
	hashes, err := s.cfg.Authority.AuditConsistency(r.Context(), p, size1, size2)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, client.AuditConsistency{Size1: size1, Size2: size2, Hashes: hashes})
}

func wireCheckpoint(c store.Checkpoint) client.AuditCheckpoint {
	return client.AuditCheckpoint{Size: c.Size, Note: string(c.Note), Time: c.Time}
}

// wireEvent shapes an event as the API sends it.
func wireEvent(e store.Event) client.AuditEvent {
	return client.AuditEvent{
		Seq: e.Seq, LeafIndex: e.LeafIndex, LeafHash: e.LeafHash, Time: e.Time, Actor: e.Actor, Source: e.Source,
		Action: string(e.Action), Serial: e.Serial, Fingerprint: e.Fingerprint, Identity: e.Identity,
		Profile: e.Profile, Outcome: e.Outcome, Detail: e.Detail,
	}
}

func wireEvents(evs []store.Event) client.AuditEvents {
	out := client.AuditEvents{Events: make([]client.AuditEvent, 0, len(evs))}
	for _, e := range evs {
		out.Events = append(out.Events, wireEvent(e))
	}
	return out
}
