package api

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/problem"
)

// statusOf maps each authority error kind to its HTTP status. This table is
// the only place the core's vocabulary meets HTTP's.
var statusOf = map[authority.Kind]int{
	authority.KindInternal:         http.StatusInternalServerError,
	authority.KindInvalid:          http.StatusBadRequest,
	authority.KindUnauthenticated:  http.StatusUnauthorized,
	authority.KindForbidden:        http.StatusForbidden,
	authority.KindTokenInvalid:     http.StatusUnauthorized,
	authority.KindTokenExpired:     http.StatusUnauthorized,
	authority.KindTokenReplayed:    http.StatusForbidden,
	authority.KindIdentityMismatch: http.StatusForbidden,
	authority.KindBadCSR:           http.StatusBadRequest,
	authority.KindPolicyDenied:     http.StatusForbidden,
	authority.KindLintFailed:       http.StatusUnprocessableEntity,
	authority.KindCertRevoked:      http.StatusForbidden,
	authority.KindCertExpired:      http.StatusUnauthorized,
	authority.KindNotFound:         http.StatusNotFound,
	authority.KindConflict:         http.StatusConflict,
	authority.KindRateLimited:      http.StatusTooManyRequests,
	authority.KindApprovalPending:  http.StatusAccepted,
}

var titleOf = map[authority.Kind]string{
	authority.KindInternal:         "Internal Error",
	authority.KindInvalid:          "Invalid Request",
	authority.KindUnauthenticated:  "Unauthenticated",
	authority.KindForbidden:        "Forbidden",
	authority.KindTokenInvalid:     "Invalid Token",
	authority.KindTokenExpired:     "Token Expired",
	authority.KindTokenReplayed:    "Token Already Used",
	authority.KindIdentityMismatch: "Identity Mismatch",
	authority.KindBadCSR:           "Bad CSR",
	authority.KindPolicyDenied:     "Denied By Policy",
	authority.KindLintFailed:       "Certificate Failed Lint",
	authority.KindCertRevoked:      "Certificate Revoked",
	authority.KindCertExpired:      "Certificate Expired",
	authority.KindNotFound:         "Not Found",
	authority.KindConflict:         "Conflict",
	authority.KindRateLimited:      "Too Many Requests",
	authority.KindApprovalPending:  "Held For Approval",
}

// fail writes err as a problem document. Internal errors are logged in full
// and answered without detail: their text is for operators, not callers.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if pending(w, err) {
		return // not a refusal: held for approvers
	}
	var e *authority.Error
	if !errors.As(err, &e) || e.Kind == authority.KindInternal {
		s.log.LogAttrs(r.Context(), slog.LevelError, "request failed", slog.String("path", r.URL.Path), slog.String("error", err.Error()))
		writeProblem(w, http.StatusInternalServerError, "internal", "Internal Error", "the server failed to handle the request: see the server log")
		return
	}
	slug := e.Kind.String()
	if e.Reason != "" {
		slug = e.Reason
	}
	if e.RetryAfter > 0 {
		// Whole seconds, rounded up: a client that waits exactly this long
		// must not be refused again for being early.
		w.Header().Set("Retry-After", strconv.FormatInt(int64((e.RetryAfter+time.Second-1)/time.Second), 10))
	}
	writeProblem(w, statusOf[e.Kind], slug, titleOf[e.Kind], e.Detail)
}

func writeProblem(w http.ResponseWriter, status int, slug, title, detail string) {
	problem.Write(w, status, slug, title, detail)
}
