package revocation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mica-pki/mica/revocation"
)

// feedServer is a real HTTPS server speaking the feed's wire format
// (server-sent events), scripted per connection. It runs outside the
// synctest bubble; the Subscriber runs inside, so the bubble's clock
// measures exactly the Subscriber's own waits.
type feedServer struct {
	*httptest.Server
	mu     sync.Mutex
	since  []int64 // the since= of every request, in order
	events []revocation.Event
	// script says what the n-th request (from 0) gets: "refuse" (503),
	// "drop" (the backlog, then the connection is cut) or "hold" (the
	// backlog, then the stream stays open).
	script func(n int) string
	// onRequest, when set, runs before the n-th request is answered.
	onRequest func(n int)
}

func newFeedServer(t *testing.T, script func(n int) string) *feedServer {
	t.Helper()
	f := &feedServer{script: script}
	f.Server = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *feedServer) serve(w http.ResponseWriter, r *http.Request) {
	since, err := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
	if err != nil {
		http.Error(w, "bad since", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	n := len(f.since)
	f.since = append(f.since, since)
	if f.onRequest != nil {
		f.onRequest(n)
	}
	events := slices.Clone(f.events)
	f.mu.Unlock()
	action := f.script(n)
	if action == "refuse" {
		http.Error(w, "feed: not now", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	send := func(event string, v any) {
		data, _ := json.Marshal(v)
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data)
	}
	if since == 0 {
		snap := revocation.Snapshot{Denied: []string{}}
		for _, e := range events {
			snap.Seq = e.Seq
			snap.Revoked = append(snap.Revoked, e)
		}
		send("snapshot", snap)
	} else {
		fmt.Fprint(w, ": resumed\n\n")
		for _, e := range events {
			if e.Seq > since {
				send(e.Kind, e)
			}
		}
	}
	w.(http.Flusher).Flush()
	if action == "drop" {
		panic(http.ErrAbortHandler) // cut the connection, as a crash or a proxy would
	}
	<-r.Context().Done()
}

func (f *feedServer) sinces() []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.since)
}

func (f *feedServer) tlsConfig() *http.Transport { return f.Client().Transport.(*http.Transport) }

// TestSubscriberReconnectsAtOnceAfterDrops: a feed that drops the stream
// after every change is rejoined after the first backoff step each time
// (it used to grow to 10 s from the 8th drop on), resuming after the last
// change applied, so every change is applied once.
func TestSubscriberReconnectsAtOnceAfterDrops(t *testing.T) {
	const drops = 12
	f := newFeedServer(t, func(n int) string {
		if n < drops {
			return "drop"
		}
		return "hold"
	})
	// The first connection gets a snapshot at sequence 1; each later one
	// finds one more change (sequence n+1).
	f.events = []revocation.Event{{Seq: 1, Kind: revocation.KindRevoked, Serial: "1"}}
	f.onRequest = func(n int) {
		if n > 0 {
			f.events = append(f.events, revocation.Event{Seq: int64(n + 1), Kind: revocation.KindRevoked, Serial: strconv.Itoa(n + 1)})
		}
	}
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var ends []time.Time // by the bubble's clock
		applied := map[int64]int{}
		all := make(chan struct{})
		sub, err := revocation.NewSubscriber(revocation.Config{URL: f.URL + "/v1/revocations/feed", TLS: f.tlsConfig().TLSClientConfig,
			OnDisconnect: func(error) {
				mu.Lock()
				ends = append(ends, time.Now())
				mu.Unlock()
			},
			OnEvent: func(e revocation.Event) {
				mu.Lock()
				applied[e.Seq]++
				if len(applied) == drops {
					close(all)
				}
				mu.Unlock()
			}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- sub.Run(ctx) }()
		select {
		case <-all:
		case <-time.After(time.Hour): // the bubble's clock: only a broken Subscriber gets here
			t.Fatal("not every change arrived")
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(ends) != drops {
			t.Fatalf("%d connections ended, want %d", len(ends), drops)
		}
		// The network takes no time on the bubble's clock: the gap
		// between two drops is the Subscriber's wait.
		for i := 1; i < len(ends); i++ {
			if gap := ends[i].Sub(ends[i-1]); gap != 100*time.Millisecond {
				t.Errorf("drop %d came %s after the previous one, want the first backoff step, 100ms", i+1, gap)
			}
		}
		for seq, n := range applied {
			if n != 1 {
				t.Errorf("change %d applied %d times", seq, n)
			}
		}
		got := f.sinces()
		for i, since := range got {
			if since != int64(i) {
				t.Errorf("request %d asked since %d, want %d (0: a snapshot; then the last change applied)", i, since, i)
			}
		}
		if sub.Set().Seq() != drops+1 {
			t.Errorf("the Set is at %d, want %d", sub.Set().Seq(), drops+1)
		}
	})
}

// TestSubscriberBacksOffWhileRefused: while the feed refuses, the wait
// doubles up to MaxBackoff; once a connection is accepted it starts again
// from the first step.
func TestSubscriberBacksOffWhileRefused(t *testing.T) {
	f := newFeedServer(t, func(n int) string {
		switch {
		case n < 6:
			return "refuse"
		case n == 6:
			return "drop"
		}
		return "hold"
	})
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var ends, connects []time.Time // by the bubble's clock
		eighth := make(chan struct{})
		sub, err := revocation.NewSubscriber(revocation.Config{URL: f.URL + "/v1/revocations/feed", TLS: f.tlsConfig().TLSClientConfig,
			MaxBackoff: time.Second,
			OnDisconnect: func(error) {
				mu.Lock()
				ends = append(ends, time.Now())
				mu.Unlock()
			},
			OnConnect: func() {
				mu.Lock()
				if connects = append(connects, time.Now()); len(connects) == 2 {
					close(eighth)
				}
				mu.Unlock()
			}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- sub.Run(ctx) }()
		// Six refusals, a connection accepted and dropped, and the eighth,
		// accepted and held.
		select {
		case <-eighth:
		case <-time.After(time.Hour): // the bubble's clock: only a broken Subscriber gets here
			t.Fatal("no eighth connection")
		}
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		if len(ends) != 7 {
			t.Fatalf("%d connections ended, want 7", len(ends))
		}
		var waits []time.Duration
		for i := 1; i < len(ends); i++ {
			waits = append(waits, ends[i].Sub(ends[i-1]))
		}
		waits = append(waits, connects[1].Sub(ends[6]))
		ms := time.Millisecond
		want := []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, time.Second, time.Second, 100 * ms}
		if !slices.Equal(waits, want) {
			t.Errorf("waits %v, want %v (doubling up to MaxBackoff, then the first step after an accepted connection)", waits, want)
		}
	})
}
