package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// worker delivers to one endpoint.
type worker struct {
	d      *Dispatcher
	ep     Endpoint
	filter filter
	client *http.Client
	lease  string

	mu         sync.Mutex
	leaseUntil time.Time
	failures   int // attempts failed since the last success
}

func newWorker(d *Dispatcher, ep Endpoint) (*worker, error) {
	if err := checkEndpoint(&ep); err != nil {
		return nil, err
	}
	f, err := compileFilter(ep)
	if err != nil {
		return nil, err
	}
	return &worker{d: d, ep: ep, filter: f, client: httpClient(ep), lease: "webhook:" + ep.Name}, nil
}

// errLeaseLost ends a batch when another server took the endpoint over.
var errLeaseLost = errors.New("webhook: another server took over this endpoint")

func (w *worker) run(ctx context.Context) {
	log := w.d.cfg.Logger.With(slog.String("endpoint", w.ep.Name))
	for ctx.Err() == nil {
		idle, err := w.step(ctx)
		if err != nil && ctx.Err() == nil && !errors.Is(err, errLeaseLost) {
			log.LogAttrs(ctx, slog.LevelWarn, "webhook delivery paused; retrying", slog.String("error", err.Error()))
		}
		if idle || err != nil {
			w.wait(ctx)
		}
	}
}

func (w *worker) wait(ctx context.Context) {
	t := time.NewTimer(w.d.cfg.Poll)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// step delivers one batch; idle when there was nothing to do (or this
// server does not hold the endpoint).
func (w *worker) step(ctx context.Context) (idle bool, err error) {
	m := w.d.metrics
	held, err := w.holdLease(ctx)
	if err != nil || !held {
		m.leader.WithLabelValues(w.ep.Name).Set(0)
		return true, err
	}
	m.leader.WithLabelValues(w.ep.Name).Set(1)
	last, err := w.d.cfg.Log.LastEventSeq(ctx)
	if err != nil {
		return false, err
	}
	// A new endpoint starts at the end of the log: it receives what
	// happens from now on, not the history.
	st, err := w.d.cfg.State.InitWebhook(ctx, w.ep.Name, last)
	if err != nil {
		return false, err
	}
	m.lag.WithLabelValues(w.ep.Name).Set(float64(max(0, last-st.Cursor)))
	evs, err := w.d.cfg.Log.Events(ctx, store.EventFilter{AfterSeq: st.Cursor, Limit: w.d.cfg.BatchSize})
	if err != nil {
		return false, err
	}
	if len(evs) == 0 {
		m.oldest.WithLabelValues(w.ep.Name).Set(0)
		return true, nil
	}
	var todo []store.Event
	for _, ev := range evs {
		if w.filter.match(ev) {
			todo = append(todo, ev)
		}
	}
	if len(todo) > 0 {
		m.oldest.WithLabelValues(w.ep.Name).Set(w.d.cfg.Clock().Sub(todo[0].Time).Seconds())
	}
	delivered, err := w.deliverAll(ctx, todo)
	if err != nil {
		return false, err
	}
	var success time.Time
	if delivered > 0 {
		success = w.d.cfg.Clock()
	}
	err = w.d.cfg.State.AdvanceWebhook(ctx, w.ep.Name, st.Cursor, evs[len(evs)-1].Seq, success)
	if errors.Is(err, store.ErrConflict) {
		return false, errLeaseLost // another server moved on; read the cursor again
	}
	return false, err
}

// deliverAll delivers evs, Concurrency at a time, and returns how many
// were taken. It fails when ctx ends or the lease is lost: the batch is
// then left for the next holder, which sends again what was sent.
func (w *worker) deliverAll(ctx context.Context, evs []store.Event) (int, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, w.ep.Concurrency)
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		delivered int
	)
	for _, ev := range evs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			ok, err := w.deliver(ctx, ev)
			if err != nil {
				cancel(err)
				return
			}
			if ok {
				mu.Lock()
				delivered++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return delivered, err
	}
	return delivered, nil
}

// deliver hands one event on until it is taken (true) or given up
// (false, recorded as a dead letter). It fails only when ctx ends or the
// lease is lost.
func (w *worker) deliver(ctx context.Context, ev store.Event) (bool, error) {
	m, name := w.d.metrics, w.ep.Name
	body, err := w.body(ctx, ev)
	if err != nil {
		return false, err
	}
	for attempt := 1; ; attempt++ {
		if held, err := w.holdLease(ctx); err != nil || !held {
			return false, errors.Join(errLeaseLost, err)
		}
		start := time.Now()
		status, retryAfter, err := w.post(ctx, ev, body)
		m.duration.WithLabelValues(name).Observe(time.Since(start).Seconds())
		if ctx.Err() != nil {
			return false, context.Cause(ctx)
		}
		now := w.d.cfg.Clock()
		if err == nil {
			m.deliveries.WithLabelValues(name, "delivered").Inc()
			m.lastSuccess.WithLabelValues(name).Set(float64(now.Unix()))
			w.mu.Lock()
			w.failures = 0
			w.mu.Unlock()
			return true, nil
		}
		m.deliveries.WithLabelValues(name, "failed").Inc()
		w.mu.Lock()
		w.failures++
		failures := w.failures
		w.mu.Unlock()
		if nerr := w.d.cfg.State.NoteWebhookFailure(ctx, name, now, err.Error(), failures); nerr != nil && ctx.Err() == nil {
			w.d.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "webhook: could not record a failed delivery", slog.String("endpoint", name), slog.String("error", nerr.Error()))
		}
		if permanent(status) || now.Sub(ev.Time) > w.ep.RetryFor {
			dl := store.DeadLetter{Endpoint: name, Seq: ev.Seq, Attempts: attempt, Status: status, Error: err.Error(), At: now}
			if err := w.d.cfg.State.AddDeadLetter(ctx, dl); err != nil {
				return false, err
			}
			m.deliveries.WithLabelValues(name, "dead_lettered").Inc()
			w.d.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "webhook: gave up on an event", slog.String("endpoint", name),
				slog.Int64("seq", ev.Seq), slog.Int("attempts", attempt), slog.String("error", err.Error()))
			return false, nil
		}
		if err := sleep(ctx, w.backoff(attempt, retryAfter)); err != nil {
			return false, err
		}
	}
}

// permanent reports whether an answer refuses the event for good: a 4xx
// other than timeouts and rate limits.
func permanent(status int) bool {
	switch status {
	case http.StatusRequestTimeout, http.StatusTooEarly, http.StatusTooManyRequests:
		return false
	}
	return status >= 400 && status < 500
}

// backoff is the wait before attempt+1: exponential from MinBackoff,
// capped at MaxBackoff, with jitter so that many events do not return in
// step; a receiver's Retry-After is honoured up to the cap.
func (w *worker) backoff(attempt int, retryAfter time.Duration) time.Duration {
	d := w.d.cfg.MinBackoff << min(attempt-1, 30)
	if d <= 0 || d > w.d.cfg.MaxBackoff {
		d = w.d.cfg.MaxBackoff
	}
	d = d/2 + rand.N(d/2+1)
	if retryAfter > d {
		d = min(retryAfter, w.d.cfg.MaxBackoff)
	}
	return d
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// body encodes ev once; every attempt sends the same bytes.
func (w *worker) body(ctx context.Context, ev store.Event) ([]byte, error) {
	var cert *store.Certificate
	if certs, ok := w.d.cfg.Log.(Certificates); ok && ev.Serial != "" {
		if c, err := certs.Certificate(ctx, ev.Serial); err == nil {
			c.DER = nil
			cert = &c
		} else if !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
	}
	return encode(NewCloudEvent(w.d.cfg.Source, ev, cert))
}

// post makes one attempt. It returns the status (0 without an answer),
// the receiver's Retry-After, and an error unless the answer was 2xx.
func (w *worker) post(ctx context.Context, ev store.Event, body []byte) (int, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.ep.URL, bytes.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	id := EventID(ev.Seq)
	now := w.d.cfg.Clock()
	req.Header.Set("Content-Type", ContentType)
	req.Header.Set("User-Agent", w.d.cfg.UserAgent)
	req.Header.Set(HeaderID, id)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	req.Header.Set(HeaderSignature, Sign(w.ep.Secret, id, now, body))
	resp, err := w.client.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("no answer from %s: %v", RedactedURL(w.ep.URL), unwrapURL(err))
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp.StatusCode, 0, nil
	}
	var retryAfter time.Duration
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
		retryAfter = time.Duration(secs) * time.Second
	}
	return resp.StatusCode, retryAfter, fmt.Errorf("%s answered %s", RedactedURL(w.ep.URL), resp.Status)
}

// unwrapURL drops the *url.Error wrapper, which repeats the URL (query
// included) in its text.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// holdLease takes or renews the endpoint's lease when a third of it has
// passed, and reports whether this server holds it.
func (w *worker) holdLease(ctx context.Context) (bool, error) {
	now := w.d.cfg.Clock()
	ttl := w.d.cfg.LeaseTTL
	w.mu.Lock()
	fresh := now.Before(w.leaseUntil.Add(-ttl * 2 / 3))
	w.mu.Unlock()
	if fresh {
		return true, nil
	}
	held, err := w.d.cfg.State.TakeLease(ctx, w.lease, w.d.owner, now, ttl)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil || !held {
		w.leaseUntil = time.Time{}
		return false, err
	}
	w.leaseUntil = now.Add(ttl)
	return true, nil
}
