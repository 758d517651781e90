// Package problem writes RFC 9457 (formerly 7807) problem documents, the
// one error format of every HTTP endpoint under /v1, so that a handler
// outside package api (the revocation feed, say) answers errors the same
// way the API does.
package problem

import (
	"encoding/json"
	"net/http"

	"github.com/mica-pki/mica/client"
)

// Write answers with one problem document: status, a stable slug (the
// type is client.ProblemTypePrefix + slug), a title, and one sentence of
// detail saying what was wrong and what to do.
func Write(w http.ResponseWriter, status int, slug, title, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(client.Problem{Type: client.ProblemTypePrefix + slug, Title: title, Status: status, Detail: detail})
}
