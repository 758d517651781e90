package acme

import (
	"bytes"
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/sqlite"
)

// crashingAuthority stops the goroutine that finalizes, as a server that
// dies there would: before the issuance, or right after it committed.
// Nothing of the door runs after that point, so the store is left exactly
// as a crash leaves it.
type crashingAuthority struct {
	Authority
	afterIssue bool
	issued     chan *authority.Issued // the certificate that committed
}

func (a *crashingAuthority) IssueACME(ctx context.Context, req authority.ACMERequest) (*authority.Issued, error) {
	if a.afterIssue {
		iss, err := a.Authority.IssueACME(ctx, req)
		if err == nil {
			a.issued <- iss
		}
		close(a.issued)
	}
	runtime.Goexit()
	return nil, nil
}

// crashFinalize finalizes o on a server that crashes at the given point,
// and returns what committed (nil before the issuance).
func (v *env) crashFinalize(c *client, o clientOrder, afterIssue bool) *authority.Issued {
	v.t.Helper()
	crashing := &crashingAuthority{Authority: v.fixture.Authority, afterIssue: afterIssue, issued: make(chan *authority.Issued, 1)}
	srv, err := New(Config{Authority: crashing, Store: v.store, Settings: v.set, Clock: v.clock.Now})
	if err != nil {
		v.t.Fatal(err)
	}
	body := rawJWS(v.t, c.key, string(mustJSON(v.t, c.header(o.body["finalize"].(string), c.nonce()))),
		mustJSON(v.t, map[string]string{"csr": base64.RawURLEncoding.EncodeToString(csrFor(v.t, o.names()...))}))
	done := make(chan struct{})
	go func() {
		defer close(done)
		do(srv, http.MethodPost, o.body["finalize"].(string), "", "application/jose+json", body)
		v.t.Error("the finalize returned: the crash did not happen")
	}()
	<-done
	if !afterIssue {
		return nil
	}
	iss := <-crashing.issued
	if iss == nil {
		v.t.Fatal("the issuance before the crash failed")
	}
	return iss
}

func (o clientOrder) names() []string {
	var out []string
	for _, id := range o.body["identifiers"].([]any) {
		out = append(out, id.(map[string]any)["value"].(string))
	}
	return out
}

func (c *client) status(o clientOrder) map[string]any {
	c.t.Helper()
	return c.post(o.url, nil).json(c.t)
}

// TestRecoverOrderLeftProcessing crashes a finalize at both points and
// restarts the door on the same database: an order whose certificate
// committed gets that certificate, one whose issuance never happened is
// ready again (or invalid once expired), each with nothing issued twice.
func TestRecoverOrderLeftProcessing(t *testing.T) {
	engines(t, func(t *testing.T, e *engine) {
		ctx := context.Background()
		tests := []struct {
			name       string
			afterIssue bool
			wait       time.Duration // after the crash, before the restart
			want       string
		}{
			{"crash before the issuance", false, stuckAfter + time.Second, statusReady},
			{"crash after the issuance committed", true, stuckAfter + time.Second, statusValid},
			{"crash before the issuance, order expired", false, orderLifetime + time.Second, statusInvalid},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				v := newEnv(t, e)
				c := v.client()
				c.register()
				o := c.readyOrder("crash.acme.test")
				before := v.certCount()
				committed := v.crashFinalize(c, o, tt.afterIssue)
				if st := c.status(o)["status"]; st != statusProcessing {
					t.Fatalf("after the crash the order is %v, want processing", st)
				}

				// Restart: a new server process on the same database. An
				// order processing for less than stuckAfter is left be: its
				// finalize may still be running on another server.
				restarted := v.newServer(e.open(t))
				c.srv = restarted
				if n, err := restarted.RunOnce(ctx); err != nil || n != 0 {
					t.Fatalf("RunOnce right after the crash settled %d orders (%v), want none", n, err)
				}
				v.clock.Advance(tt.wait)
				if n, err := restarted.RunOnce(ctx); err != nil || n != 1 {
					t.Fatalf("RunOnce settled %d orders (%v), want 1", n, err)
				}
				got := c.status(o)
				if got["status"] != tt.want {
					t.Fatalf("settled order is %v, want %s", got, tt.want)
				}
				switch tt.want {
				case statusValid:
					if v.certCount() != before+1 {
						t.Errorf("%d certificates after the restart, want the 1 that committed", v.certCount()-before)
					}
					dl := c.post(got["certificate"].(string), nil)
					leaf, chain := parseChain(t, dl.body)
					if !leaf.Equal(committed.Certificate) || len(chain) != 1 || !chain[0].Equal(committed.Chain[0]) {
						t.Errorf("the settled order serves serial %s, want the committed %s with its chain", leaf.SerialNumber.Text(16), committed.Record.Serial)
					}
				case statusReady:
					if e, _ := got["error"].(map[string]any); !strings.Contains(e["detail"].(string), "interrupted") {
						t.Errorf("ready-again order's error %v does not say finalize was interrupted", got["error"])
					}
					if a := c.finalize(o, csrFor(t, "crash.acme.test")); a.status != http.StatusOK || v.certCount() != before+1 {
						t.Errorf("finalize after the recovery: %v, %d certificates", a, v.certCount()-before)
					}
				case statusInvalid:
					if e, _ := got["error"].(map[string]any); !strings.Contains(e["detail"].(string), "expired") {
						t.Errorf("invalid order's error %v does not say it expired", got["error"])
					}
					if v.certCount() != before {
						t.Errorf("%d certificates issued", v.certCount()-before)
					}
				}
				// A second pass finds nothing more to do.
				if n, err := restarted.RunOnce(ctx); err != nil || n != 0 {
					t.Errorf("second RunOnce settled %d (%v)", n, err)
				}
			})
		}
	})
}

// TestRecoverTwoServers: servers sharing a database settle a stuck order
// once between them.
func TestRecoverTwoServers(t *testing.T) {
	engines(t, func(t *testing.T, e *engine) {
		v := newEnv(t, e)
		c := v.client()
		c.register()
		var orders []clientOrder
		for _, name := range []string{"a.acme.test", "b.acme.test", "c.acme.test"} {
			o := c.readyOrder(name)
			v.crashFinalize(c, o, name == "b.acme.test")
			orders = append(orders, o)
		}
		v.clock.Advance(stuckAfter + time.Second)
		servers := []*Server{v.newServer(e.open(t)), v.newServer(e.open(t))}
		var wg sync.WaitGroup
		counts := make([]int, len(servers))
		for i, srv := range servers {
			wg.Go(func() {
				n, err := srv.RunOnce(context.Background())
				if err != nil {
					t.Error(err)
				}
				counts[i] = n
			})
		}
		wg.Wait()
		if counts[0]+counts[1] != len(orders) {
			t.Errorf("servers settled %v orders, want %d in all", counts, len(orders))
		}
		for i, want := range []string{statusReady, statusValid, statusReady} {
			if st := c.status(orders[i])["status"]; st != want {
				t.Errorf("order %d is %v, want %s", i, st, want)
			}
		}
	})
}

// TestFinalizeOutlivesTheClient: a client that hangs up while its
// certificate is being issued does not abort the issuance, and the order
// is valid when it comes back.
func TestFinalizeOutlivesTheClient(t *testing.T) {
	engines(t, func(t *testing.T, e *engine) {
		v := newEnv(t, e)
		c := v.client()
		c.register()
		o := c.readyOrder("hangup.acme.test")
		gone := &cancellingAuthority{Authority: v.fixture.Authority}
		srv, err := New(Config{Authority: gone, Store: v.store, Settings: v.set, Clock: v.clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		body := rawJWS(t, c.key, string(mustJSON(t, c.header(o.body["finalize"].(string), c.nonce()))),
			mustJSON(t, map[string]string{"csr": base64.RawURLEncoding.EncodeToString(csrFor(t, "hangup.acme.test"))}))
		ctx, cancel := context.WithCancel(context.Background())
		gone.hangUp = cancel
		r := httptest.NewRequestWithContext(ctx, http.MethodPost, o.body["finalize"].(string), bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/jose+json")
		w := httptest.NewRecorder()
		srv.Handler().ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			t.Errorf("finalize: %d %s", w.Code, w.Body)
		}
		if st := c.status(o)["status"]; st != statusValid {
			t.Errorf("order is %v after the client hung up during issuance, want valid", st)
		}
	})
}

// cancellingAuthority cancels the request's context (the client hung up)
// before the issuance runs.
type cancellingAuthority struct {
	Authority
	hangUp func()
}

func (a *cancellingAuthority) IssueACME(ctx context.Context, req authority.ACMERequest) (*authority.Issued, error) {
	a.hangUp()
	return a.Authority.IssueACME(ctx, req)
}

// TestRunSettlesAtStartAndPeriodically runs the loop in a bubble of fake
// time: it settles nothing at start while the order is fresh, and settles
// it on the tick after stuckAfter.
func TestRunSettlesAtStartAndPeriodically(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mica.db")
	e := &engine{name: "sqlite", sqlitePath: path, open: func(t *testing.T) testStore { return openSQLite(t, path) }}
	v := newEnv(t, e)
	c := v.client()
	c.register()
	o := c.readyOrder("loop.acme.test")
	v.crashFinalize(c, o, false)
	crashedAt := v.clock.Now()

	synctest.Test(t, func(t *testing.T) {
		st, err := sqlite.Open(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		start := time.Now()
		srv, err := New(Config{Authority: v.fixture.Authority, Store: st, Settings: v.set,
			Clock: func() time.Time { return crashedAt.Add(time.Since(start)) }})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- srv.Run(ctx) }()
		synctest.Wait()
		if rec := orderStatus(t, st, o); rec != statusProcessing {
			t.Fatalf("at start-up a fresh processing order became %s", rec)
		}
		time.Sleep(stuckAfter + recoverEvery)
		synctest.Wait()
		if rec := orderStatus(t, st, o); rec != statusReady {
			t.Errorf("after stuckAfter the order is %s, want settled to ready", rec)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func orderStatus(t *testing.T, st Store, o clientOrder) string {
	t.Helper()
	rec, err := st.ACMEByID(context.Background(), store.ACMEOrder, strings.TrimPrefix(o.url, testURL+"order/"))
	if err != nil {
		t.Fatal(err)
	}
	return rec.Status
}
