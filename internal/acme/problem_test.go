package acme

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/authority"
)

func TestRateLimitedRefusalBecomesRateLimitedProblem(t *testing.T) {
	p := fromAuthority(&authority.Error{Kind: authority.KindRateLimited, Reason: "renewal-storm",
		Detail: "renewal storm", RetryAfter: 90*time.Second + time.Millisecond})
	if p == nil || p.Type != errorNS+errRateLimited || p.Status != 429 || p.retryAfter != 91 {
		t.Fatalf("problem = %+v, want rateLimited, 429, retry after 91s (rounded up)", p)
	}
	w := httptest.NewRecorder()
	writeProblem(w, p)
	if w.Code != 429 || w.Header().Get("Retry-After") != "91" {
		t.Fatalf("response %d, Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
}
