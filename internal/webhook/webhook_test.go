package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mica-pki/mica/internal/store"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

// receiver is a webhook receiver on loopback: it verifies every
// delivery's signature, answers with what answer says, and records the
// ids it took (by idempotency id, the way a receiver drops repeats).
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	answer func(id string, attempt int) int

	mu       sync.Mutex
	attempts map[string]int
	taken    map[string]CloudEvent
	order    []string
	bad      []string
	arrived  chan string
}

func newReceiver(t *testing.T, answer func(id string, attempt int) int) *receiver {
	r := &receiver{t: t, answer: answer, attempts: map[string]int{}, taken: map[string]CloudEvent{}, arrived: make(chan string, 1000)}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	id := req.Header.Get(HeaderID)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := Verify(secret, req.Header, body, time.Now(), 5*time.Minute); err != nil {
		r.bad = append(r.bad, id+": "+err.Error())
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var ce CloudEvent
	if req.Header.Get("Content-Type") != ContentType || json.Unmarshal(body, &ce) != nil || ce.ID != id {
		r.bad = append(r.bad, id+": not a CloudEvent with the header's id")
	}
	r.attempts[id]++
	status := http.StatusNoContent
	if r.answer != nil {
		status = r.answer(id, r.attempts[id])
	}
	w.WriteHeader(status)
	if status < 300 {
		if _, dup := r.taken[id]; !dup {
			r.taken[id] = ce
			r.order = append(r.order, id)
		}
		r.arrived <- id
	}
}

// waitFor waits until the receiver took every id in ids, or fails.
func (r *receiver) waitFor(ids ...string) {
	r.t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		r.mu.Lock()
		missing := []string{}
		for _, id := range ids {
			if _, ok := r.taken[id]; !ok {
				missing = append(missing, id)
			}
		}
		r.mu.Unlock()
		if len(missing) == 0 {
			return
		}
		select {
		case <-r.arrived:
		case <-deadline:
			r.t.Fatalf("the receiver did not get %v within 20s (got %v)", missing, r.order)
		}
	}
}

func (r *receiver) checkSignatures() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.bad) > 0 {
		r.t.Errorf("deliveries that failed verification: %q", r.bad)
	}
}

type env struct {
	t *testing.T
	b *backend
	d *Dispatcher
}

func newEnv(t *testing.T) *env {
	return &env{t: t, b: newBackend(t)}
}

func (e *env) start(eps ...Endpoint) (*Dispatcher, context.CancelFunc) {
	e.t.Helper()
	d, err := New(Config{Endpoints: eps, Log: e.b, State: e.b, Source: "mica://example.org", Poll: 20 * time.Millisecond,
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Registerer: prometheus.NewRegistry(), BatchSize: 5,
		LeaseTTL: 600 * time.Millisecond})
	if err != nil {
		e.t.Fatal(err)
	}
	e.d = d
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	stop := func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			e.t.Error("the dispatcher did not stop within 20s")
		}
	}
	e.t.Cleanup(stop)
	return d, stop
}

func endpoint(name string, r *receiver) Endpoint {
	return Endpoint{Name: name, URL: r.srv.URL + "/hook?token=hidden", Secret: secret}
}

func (e *env) deliveries(endpoint, outcome string) float64 {
	return testutil.ToFloat64(e.d.metrics.deliveries.WithLabelValues(endpoint, outcome))
}

func TestDeliversSignedCloudEvents(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t, nil)
	all := newReceiver(t, nil)
	ep := endpoint("cmdb", r)
	ep.Types = []string{"cert.*", "mica.issuance.refused"}
	ep.Identities = []string{"spiffe://example.org/billing/", "*.svc.example.org"}
	e.b.append(store.Event{Action: store.ActionCACreated, Actor: "system"}) // before the endpoint existed: not sent
	e.b.issued("0a", "admin")
	e.start(ep, endpoint("all", all))
	waitLeader(t, e, "cmdb", "all")

	issued := e.b.append(store.Event{Action: store.ActionCertIssued, Actor: "admin", Serial: "0a", Identity: "spiffe://example.org/billing/api", Profile: "service", Outcome: "ok"})
	e.b.append(store.Event{Action: store.ActionCertIssued, Identity: "spiffe://example.org/other/api"})     // identity filtered out
	e.b.append(store.Event{Action: store.ActionTokenCreated, Identity: "spiffe://example.org/billing/api"}) // type filtered out
	e.b.append(store.Event{Action: store.ActionCertIssued, Identity: "billing.svc.example.org"})
	refused := e.b.append(store.Event{Action: store.ActionIssuanceRefused, Identity: "web.svc.example.org", Outcome: "policy-denied"})
	discovered := e.b.append(store.Event{Action: store.ActionCertDiscovered, Identity: "db.svc.example.org", Fingerprint: "ff"})
	r.waitFor(EventID(issued), EventID(issued+3), EventID(refused), EventID(discovered))
	all.waitFor(EventID(issued), EventID(issued+1), EventID(issued+2), EventID(issued+3), EventID(refused), EventID(discovered))
	r.checkSignatures()
	all.checkSignatures()

	r.mu.Lock()
	if len(r.taken) != 4 {
		t.Errorf("the filtered endpoint took %v, want 4 events", r.order)
	}
	ce := r.taken[EventID(issued)]
	if ce.SpecVersion != "1.0" || ce.Type != "mica.cert.issued" || ce.Source != "mica://example.org" || ce.Subject != "spiffe://example.org/billing/api" ||
		ce.Data.Seq != issued || ce.Data.Serial != "0a" || ce.Data.Profile != "service" || ce.Data.Certificate == nil || ce.Data.Certificate.Owner != "admin" {
		t.Errorf("CloudEvent %+v", ce)
	}
	if got := r.taken[EventID(refused)].Type; got != "mica.issuance.refused" {
		t.Errorf("refusal type %q", got)
	}
	r.mu.Unlock()
	waitCond(t, e, "the delivered counter reaches 4", func() bool { return e.deliveries("cmdb", "delivered") == 4 })
}

// waitLeader waits until the dispatcher holds its endpoints' leases and
// has set their cursors, so that events appended afterwards are new to it.
func waitLeader(t *testing.T, e *env, endpoints ...string) {
	t.Helper()
	waitCond(t, e, "the dispatcher starts", func() bool { return e.b.initialised(endpoints...) })
}

func TestRetriesAndDeadLetters(t *testing.T) {
	e := newEnv(t)
	var refuseID, flakyID, slowID string
	r := newReceiver(t, func(id string, attempt int) int {
		switch {
		case id == refuseID:
			return http.StatusBadRequest // refused for good
		case id == flakyID && attempt < 3:
			return http.StatusServiceUnavailable
		case id == slowID && attempt < 2:
			return http.StatusTooManyRequests
		}
		return http.StatusOK
	})
	e.start(endpoint("chat", r))
	waitLeader(t, e, "chat")
	refuseID = EventID(e.b.nextSeq())
	e.b.append(store.Event{Action: store.ActionCertRevoked, Serial: "01"})
	flakyID = EventID(e.b.append(store.Event{Action: store.ActionCertRevoked, Serial: "02"}))
	slowID = EventID(e.b.append(store.Event{Action: store.ActionCertRevoked, Serial: "03"}))
	last := e.b.append(store.Event{Action: store.ActionCertRevoked, Serial: "04"})
	r.waitFor(flakyID, slowID, EventID(last))
	waitCond(t, e, "the cursor passes the last event", func() bool { return e.b.state("chat").Cursor >= last })

	dead := e.b.deadLetters("chat")
	if len(dead) != 1 || EventID(dead[0].Seq) != refuseID || dead[0].Status != http.StatusBadRequest || dead[0].Attempts != 1 {
		t.Errorf("dead letters %+v, want the refused event after one attempt", dead)
	}
	waitCond(t, e, "the dead letter is counted", func() bool { return e.deliveries("chat", "dead_lettered") == 1 })
	r.mu.Lock()
	if r.attempts[flakyID] != 3 || r.attempts[slowID] != 2 {
		t.Errorf("attempts: flaky %d (want 3), rate-limited %d (want 2)", r.attempts[flakyID], r.attempts[slowID])
	}
	r.mu.Unlock()
	if got := e.deliveries("chat", "failed"); got != 4 {
		t.Errorf("failed attempts counted %v, want 4", got)
	}
	if got := e.deliveries("chat", "dead_lettered"); got != 1 {
		t.Errorf("dead letters counted %v, want 1", got)
	}
	if st := e.b.state("chat"); st.Failures != 0 || st.LastSuccess.IsZero() || !strings.Contains(st.LastError, "answered") {
		t.Errorf("state %+v: want failures cleared by a success and the last error kept", st)
	}
}

// TestGivesUpAfterRetryFor: an event still failing when its retry time
// has run out becomes a dead letter, and delivery goes on.
func TestGivesUpAfterRetryFor(t *testing.T) {
	e := newEnv(t)
	down := newReceiver(t, func(string, int) int { return http.StatusBadGateway })
	ep := endpoint("down", down)
	ep.RetryFor = 100 * time.Millisecond
	e.start(ep)
	waitLeader(t, e, "down")
	seq := e.b.append(store.Event{Action: store.ActionCertIssued})
	waitCond(t, e, "the event is given up", func() bool { return len(e.b.deadLetters("down")) == 1 })
	// A 502 is worth retrying: only the retry time running out gives it up.
	if dl := e.b.deadLetters("down")[0]; dl.Seq != seq || dl.Status != http.StatusBadGateway || dl.Attempts < 1 {
		t.Errorf("dead letter %+v", dl)
	}
}

// TestRestartDeliversAgain: a delivery cut short by a stop is delivered
// again, with the same id, by the next dispatcher; no event is lost.
func TestRestartDeliversAgain(t *testing.T) {
	e := newEnv(t)
	block := make(chan struct{})
	var blockedID string
	var once sync.Once
	entered := make(chan struct{})
	r := newReceiver(t, func(id string, attempt int) int {
		if id == blockedID && attempt == 1 {
			once.Do(func() { close(entered) })
			<-block
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	ep := endpoint("cmdb", r)
	ep.Concurrency = 1
	_, stop := e.start(ep)
	waitLeader(t, e, "cmdb")
	first := e.b.append(store.Event{Action: store.ActionCertIssued})
	blockedID = EventID(e.b.nextSeq())
	e.b.append(store.Event{Action: store.ActionCertRenewed})
	e.b.append(store.Event{Action: store.ActionCertRevoked})
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the blocked event was never sent")
	}
	stop()
	close(block)
	e.start(ep) // takes over once the stopped server's lease runs out
	r.waitFor(EventID(first), blockedID, EventID(first+2))
	r.checkSignatures()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.attempts[EventID(first)] < 1 || r.attempts[blockedID] != 2 {
		t.Errorf("attempts %v: want the blocked event sent again after the restart", r.attempts)
	}
}

// TestOneServerPerEndpoint: two dispatchers on one database take turns;
// only the lease holder delivers.
func TestOneServerPerEndpoint(t *testing.T) {
	e := newEnv(t)
	r := newReceiver(t, nil)
	e.start(endpoint("cmdb", r))
	e2 := &env{t: t, b: e.b}
	e2.start(endpoint("cmdb", r))
	waitLeader(t, e, "cmdb")
	var ids []string
	for range 20 {
		ids = append(ids, EventID(e.b.append(store.Event{Action: store.ActionCertIssued})))
	}
	r.waitFor(ids...)
	leaders := testutil.ToFloat64(e.d.metrics.leader.WithLabelValues("cmdb")) + testutil.ToFloat64(e2.d.metrics.leader.WithLabelValues("cmdb"))
	if leaders != 1 {
		t.Errorf("%v servers lead the endpoint, want 1", leaders)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, n := range r.attempts {
		if n != 1 {
			t.Errorf("event %s sent %d times", id, n)
		}
	}
}

func TestConfigRefusals(t *testing.T) {
	b := newBackend(t)
	good := Endpoint{Name: "a", URL: "https://hooks.example.org/x", Secret: secret}
	for name, ep := range map[string]Endpoint{
		"no name":          {URL: good.URL, Secret: secret},
		"bad url":          {Name: "a", URL: "ftp://x", Secret: secret},
		"credentials":      {Name: "a", URL: "https://u:p@x/", Secret: secret},
		"short secret":     {Name: "a", URL: good.URL, Secret: []byte("short")},
		"bad type glob":    {Name: "a", URL: good.URL, Secret: secret, Types: []string{"cert.["}},
		"bad identity pat": {Name: "a", URL: good.URL, Secret: secret, Identities: []string{"10.0.0.0/40"}},
	} {
		if _, err := New(Config{Endpoints: []Endpoint{ep}, Log: b, State: b, Source: "mica://x"}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(Config{Endpoints: []Endpoint{good, good}, Log: b, State: b, Source: "mica://x"}); err == nil {
		t.Error("two endpoints with one name: accepted")
	}
	for _, s := range []string{"whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3", "a secret of at least thirty-two characters"} {
		if _, err := ParseSecret(s); err != nil {
			t.Errorf("ParseSecret(%q): %v", s, err)
		}
	}
	for _, s := range []string{"whsec_!!", "whsec_c2hvcnQ=", "too short"} {
		if _, err := ParseSecret(s); err == nil {
			t.Errorf("ParseSecret(%q) accepted", s)
		}
	}
}

func TestVerify(t *testing.T) {
	body := []byte(`{"id":"7"}`)
	now := time.Now()
	h := http.Header{}
	h.Set(HeaderID, "7")
	h.Set(HeaderTimestamp, fmt.Sprint(now.Unix()))
	h.Set(HeaderSignature, "v1,bm90IGl0 "+Sign(secret, "7", now, body))
	if err := Verify(secret, h, body, now, time.Minute); err != nil {
		t.Errorf("a good signature (second of two) failed: %v", err)
	}
	for name, mutate := range map[string]func(h http.Header, b []byte) []byte{
		"changed body": func(h http.Header, b []byte) []byte { return []byte(`{"id":"8"}`) },
		"other id":     func(h http.Header, b []byte) []byte { h.Set(HeaderID, "8"); return b },
		"old timestamp": func(h http.Header, b []byte) []byte {
			h.Set(HeaderTimestamp, fmt.Sprint(now.Add(-time.Hour).Unix()))
			return b
		},
		"no signature": func(h http.Header, b []byte) []byte { h.Del(HeaderSignature); return b },
	} {
		h2 := h.Clone()
		if err := Verify(secret, h2, mutate(h2, body), now, time.Minute); err == nil {
			t.Errorf("%s: verified", name)
		}
	}
}

// waitCond waits until cond holds, checking it again at every write to
// the delivery state; the deadline only bounds a broken test.
func waitCond(t *testing.T, e *env, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		changed := e.b.changed()
		if cond() {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("%s: not within 20s", what)
		}
	}
}
