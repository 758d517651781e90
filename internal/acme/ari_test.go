package acme

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/renewal"
)

// TestRenewalInfo: the suggested window is the one renewal schedule's
// (where mica's agent renews), and "now" once the certificate is revoked.
func TestRenewalInfo(t *testing.T) {
	engines(t, func(t *testing.T, e *engine) {
		v := newEnv(t, e)
		c := v.client()
		c.register()
		o := c.readyOrder("ari.acme.test")
		leaf, _ := parseChain(t, []byte(c.post(c.finalize(o, csrFor(t, "ari.acme.test")).json(t)["certificate"].(string), nil).body))
		id := base64.RawURLEncoding.EncodeToString(leaf.AuthorityKeyId) + "." + base64.RawURLEncoding.EncodeToString(leaf.SerialNumber.Bytes())
		window := func() (time.Time, time.Time) {
			a := do(v.srv, http.MethodGet, testURL+"renewal-info/"+id, "", "", nil)
			var ri struct {
				SuggestedWindow struct{ Start, End time.Time } `json:"suggestedWindow"`
			}
			if a.status != http.StatusOK || json.Unmarshal(a.body, &ri) != nil {
				t.Fatalf("renewal-info: %v", a)
			}
			return ri.SuggestedWindow.Start, ri.SuggestedWindow.End
		}
		start, end := window()
		wantStart, wantEnd := renewal.Window(leaf.NotBefore, leaf.NotAfter)
		if !start.Equal(wantStart.Truncate(time.Second)) || !end.Equal(wantEnd.Truncate(time.Second)) {
			t.Errorf("window [%v, %v], want the renewal schedule's [%v, %v]", start, end, wantStart, wantEnd)
		}
		if _, err := v.fixture.Authority.RevokeACME(context.Background(), authority.ACMERevocation{Account: c.kid, CertDER: leaf.Raw}); err != nil {
			t.Fatal(err)
		}
		if start, end := window(); end.After(v.clock.Now()) || !start.Before(end) {
			t.Errorf("window of a revoked certificate [%v, %v], want it over by now %v", start, end, v.clock.Now())
		}
		if a := do(v.srv, http.MethodGet, testURL+"renewal-info/not-an-id", "", "", nil); a.problem != errMalformed {
			t.Errorf("renewal-info of a bad ID: %v", a)
		}
	})
}
