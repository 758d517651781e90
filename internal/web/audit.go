package web

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/mica-pki/mica/internal/auditlog"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/store"
)

// The audit log page: the latest signed checkpoint, the state of the last
// full verification, and the events, newest first by leaf or searched by
// identity, action and time.
//
// Verification is what `mica audit verify` does, run by the server on its
// own log: every leaf recomputed from its event, the tree rebuilt, every
// stored checkpoint's signature and root checked. It reads the log through
// the authority's audit reads like any reader: as mica itself on the
// schedule, as the person who asked for it otherwise.

type verifyState struct {
	Never      bool
	Running    bool
	Leaves     int64 // verified so far, or in all
	By         string
	StartedAt  time.Time
	FinishedAt time.Time
	OK         bool
	Summary    string
	Problem    string
	Tampered   bool
}

type verifier struct {
	a    *authority.Authority
	now  func() time.Time
	log  *slog.Logger
	kick chan authority.Principal
	mu   sync.Mutex
	st   verifyState
}

func newVerifier(a *authority.Authority, now func() time.Time, log *slog.Logger) *verifier {
	return &verifier{a: a, now: now, log: log, kick: make(chan authority.Principal, 1), st: verifyState{Never: true}}
}

func (v *verifier) state() verifyState {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.st
}

// request asks for a verification as p; false when one is running or
// waiting already.
func (v *verifier) request(p authority.Principal) bool {
	if v.state().Running {
		return false
	}
	select {
	case v.kick <- p:
		return true
	default:
		return false
	}
}

// run verifies the log a minute after the start, then every interval, and
// whenever someone asks.
func (v *verifier) run(ctx context.Context, every time.Duration) {
	t := time.NewTimer(time.Minute)
	defer t.Stop()
	for {
		p := authority.Principal{Name: authority.SystemPrincipal}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case p = <-v.kick:
		}
		v.verify(ctx, p)
		t.Reset(every)
	}
}

// verifyPage is how many leaves a verification reads at once.
const verifyPage = 10000

func (v *verifier) verify(ctx context.Context, p authority.Principal) {
	v.mu.Lock()
	v.st = verifyState{Running: true, By: p.Name, StartedAt: v.now()}
	v.mu.Unlock()
	res, err := v.walk(ctx, p)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.st.Running, v.st.FinishedAt = false, v.now()
	var tamper *auditlog.TamperError
	switch {
	case errors.As(err, &tamper):
		v.st.Tampered, v.st.Problem = true, tamper.Error()
		v.log.Error("the audit log does not verify", "error", tamper.Error())
	case errors.As(err, new(*authority.Error)):
		v.st.Problem = detail(err)
	case err != nil:
		v.st.Problem = err.Error()
	default:
		v.st.OK, v.st.Leaves = true, res.Leaves
		v.st.Summary = fmt.Sprintf("%s leaves recomputed; %d signed checkpoints checked, the largest of size %s", group(res.Leaves), res.Checkpoints, group(res.Covered))
	}
}

func (v *verifier) walk(ctx context.Context, p authority.Principal) (auditlog.Result, error) {
	key, err := v.a.AuditKey()
	if err != nil {
		return auditlog.Result{}, err
	}
	var notes [][]byte
	for after := int64(0); ; {
		cps, err := v.a.AuditCheckpoints(ctx, p, after, 1000)
		if err != nil {
			return auditlog.Result{}, err
		}
		for _, c := range cps {
			notes = append(notes, c.Note)
			after = c.Size
		}
		if len(cps) < 1000 {
			break
		}
	}
	ver, err := auditlog.NewVerification(key, notes, nil)
	if err != nil {
		return auditlog.Result{}, err
	}
	for start := int64(0); ; {
		leaves, err := v.a.AuditLeaves(ctx, p, start, verifyPage)
		if err != nil {
			return auditlog.Result{}, err
		}
		for i := range leaves {
			if err := ver.Add(&leaves[i]); err != nil {
				return auditlog.Result{}, err
			}
		}
		start += int64(len(leaves))
		v.mu.Lock()
		v.st.Leaves = start
		v.mu.Unlock()
		if len(leaves) < verifyPage {
			break
		}
	}
	return ver.Finish()
}

func (c *Console) verifyNow(w http.ResponseWriter, r *http.Request, s *session) {
	if err := c.cfg.Authority.Authorize(s.Principal, authority.ActAuditRead, authority.Resource{}); err != nil {
		c.refuse(w, r, s, err)
		return
	}
	c.verify.request(s.Principal)
	http.Redirect(w, r, "/ui/audit?done=verify", http.StatusSeeOther)
}

type auditView struct {
	Checkpoint      store.Checkpoint
	CheckpointAge   time.Duration
	CheckpointError string
	Verify          verifyState
	MayVerify       bool
	Events          []store.Event
	Searching       bool
	Identity        string
	Action          string
	Since           string
	Actions         []string
	// Leaf view: newest first, from Start (exclusive end End).
	Start, End, Size int64
	Older, Newer     int64
	HasOlder         bool
	HasNewer         bool
	// Search view: the next page starts after NextSeq.
	NextSeq    int64
	HasNextSeq bool
	Problem    string
	Done       string
}

// auditActions are offered in the search form; any action name is
// accepted.
var auditActions = []string{
	string(store.ActionCertIssued), string(store.ActionCertRenewed), string(store.ActionCertRevoked), string(store.ActionIssuanceRefused),
	string(store.ActionTokenCreated), string(store.ActionIdentityDenied), string(store.ActionIdentityAllowed), string(store.ActionAuthFailed),
	string(store.ActionRateLimited), string(store.ActionApprovalRequested), string(store.ActionApprovalVoted), string(store.ActionApprovalExecuted),
	string(store.ActionRoleGranted), string(store.ActionRoleBreakGlass), string(store.ActionPolicyActivated),
	string(store.ActionConsoleSessionCreated), string(store.ActionConsoleSessionEnded),
}

var actionName = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,63}$`)

func (c *Console) audit(w http.ResponseWriter, r *http.Request, s *session) {
	ctx, p := r.Context(), s.Principal
	v := auditView{Actions: auditActions, Verify: c.verify.state(), Done: doneMessage(r.URL.Query().Get("done"))}
	v.MayVerify = c.cfg.Authority.Authorize(p, authority.ActAuditRead, authority.Resource{}) == nil
	cp, err := c.cfg.Authority.AuditCheckpoint(ctx, p)
	if err != nil {
		if authority.KindOf(err) == authority.KindInternal {
			c.refuse(w, r, s, err)
			return
		}
		v.CheckpointError = detail(err)
		c.render(w, r, s, http.StatusOK, "audit", "Audit log", "audit", v)
		return
	}
	v.Checkpoint, v.CheckpointAge = cp, c.now().Sub(cp.Time)
	q := r.URL.Query()
	for _, f := range []struct {
		dst  *string
		name string
		max  int
	}{{&v.Identity, "identity", 2048}, {&v.Action, "action", 64}, {&v.Since, "since", 16}} {
		if *f.dst, err = bounded(r, f.name, f.max); err != nil {
			c.fail(w, r, s, http.StatusBadRequest, err.Error())
			return
		}
	}
	v.Searching = v.Identity != "" || v.Action != "" || v.Since != ""
	if v.Searching {
		f := store.EventFilter{Identity: v.Identity, Limit: pageSize + 1}
		if v.Action != "" {
			if !actionName.MatchString(v.Action) {
				c.fail(w, r, s, http.StatusBadRequest, fmt.Sprintf("action %q is not an action name like cert.revoked", v.Action))
				return
			}
			f.Action = store.Action(v.Action)
		}
		since := v.Since
		if since == "" {
			since = "7d"
		}
		d, err := duration.Parse(since)
		if err != nil || d <= 0 {
			c.fail(w, r, s, http.StatusBadRequest, fmt.Sprintf("since %q is not a duration like 24h or 7d", since))
			return
		}
		f.Since = c.now().Add(-d)
		if a := q.Get("after"); a != "" {
			if f.AfterSeq, err = strconv.ParseInt(a, 10, 64); err != nil || f.AfterSeq < 0 {
				c.fail(w, r, s, http.StatusBadRequest, "after must be an event sequence number")
				return
			}
		}
		evs, err := c.cfg.Authority.AuditEvents(ctx, p, f)
		if err != nil {
			c.refuse(w, r, s, err)
			return
		}
		if len(evs) > pageSize {
			evs, v.HasNextSeq = evs[:pageSize], true
			v.NextSeq = evs[pageSize-1].Seq
		}
		v.Events = evs
		c.render(w, r, s, http.StatusOK, "audit", "Audit log", "audit", v)
		return
	}
	v.Size = cp.Size
	v.End = v.Size
	if e := q.Get("end"); e != "" {
		if v.End, err = strconv.ParseInt(e, 10, 64); err != nil || v.End < 0 || v.End > v.Size {
			c.fail(w, r, s, http.StatusBadRequest, fmt.Sprintf("end must be a leaf index from 0 to %d", v.Size))
			return
		}
	}
	v.Start = max(0, v.End-pageSize)
	if v.End > v.Start {
		evs, err := c.cfg.Authority.AuditLeaves(ctx, p, v.Start, int(v.End-v.Start))
		if err != nil {
			c.refuse(w, r, s, err)
			return
		}
		slices.Reverse(evs)
		v.Events = evs
	}
	v.HasOlder, v.Older = v.Start > 0, v.Start
	v.HasNewer, v.Newer = v.End < v.Size, min(v.Size, v.End+pageSize)
	c.render(w, r, s, http.StatusOK, "audit", "Audit log", "audit", v)
}
