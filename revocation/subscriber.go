package revocation

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Config says where the feed is and how to reach it.
type Config struct {
	// URL is the feed, e.g. https://mica.example:8443/v1/revocations/feed.
	URL string
	// TLS trusts the server and presents the subscriber's certificate: the
	// feed is served over mTLS to any certificate mica issued.
	TLS *tls.Config
	// OnEvent, when set, is called after each new change is applied, and
	// OnSnapshot after each snapshot; neither may block for long.
	OnEvent    func(Event)
	OnSnapshot func(Snapshot)
	// OnConnect, when set, is called when a connection to the feed is
	// accepted, and OnDisconnect whenever an attempt ends (refused,
	// unreachable or cut) with why: a verifier's "feed connected" metric
	// and its log line hang here. Neither may block.
	OnConnect    func()
	OnDisconnect func(error)
	// MaxBackoff bounds the wait between reconnections; default 10s.
	MaxBackoff time.Duration
}

// firstBackoff is the wait after a connection the feed accepted; it
// doubles after each one that failed, up to MaxBackoff.
const firstBackoff = 100 * time.Millisecond

// Subscriber keeps a Set current from the feed.
type Subscriber struct {
	cfg  Config
	set  *Set
	http *http.Client
}

// NewSubscriber returns a Subscriber with an empty Set; Run fills it.
func NewSubscriber(cfg Config) (*Subscriber, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("revocation: feed URL %q must be https://host/v1/revocations/feed", cfg.URL)
	}
	if cfg.TLS == nil {
		return nil, errors.New("revocation: Config.TLS is needed: the feed is served over mTLS")
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	// One stream per connection: a reconnection shakes hands again, so the
	// server judges the subscriber's current (perhaps renewed) certificate.
	tr := &http.Transport{TLSClientConfig: cfg.TLS.Clone(), ForceAttemptHTTP2: false, TLSHandshakeTimeout: 10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second, DisableKeepAlives: true}
	return &Subscriber{cfg: cfg, set: &Set{}, http: &http.Client{Transport: tr}}, nil
}

// Set is the view the Subscriber keeps current.
func (s *Subscriber) Set() *Set { return s.set }

// Run follows the feed until ctx ends, reconnecting with backoff and
// resuming from the last applied sequence number. The backoff starts again
// from its first step after every connection the feed accepted, so a
// stream that drops now and then is rejoined at once, and doubles (up to
// MaxBackoff) while connections fail.
func (s *Subscriber) Run(ctx context.Context) error {
	backoff := firstBackoff
	for {
		accepted, err := s.runOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if s.cfg.OnDisconnect != nil {
			s.cfg.OnDisconnect(err)
		}
		if accepted {
			backoff = firstBackoff
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, s.cfg.MaxBackoff)
	}
}

// RunOnce follows one connection of the feed until it ends, starting after
// the Set's sequence number. It always returns an error: why the
// connection ended.
func (s *Subscriber) RunOnce(ctx context.Context) error {
	_, err := s.runOnce(ctx)
	return err
}

// runOnce is RunOnce, and reports whether the feed accepted the
// connection (answered 200) before it ended.
func (s *Subscriber) runOnce(ctx context.Context) (accepted bool, err error) {
	u, _ := url.Parse(s.cfg.URL)
	q := u.Query()
	q.Set("since", strconv.FormatInt(s.set.Seq(), 10))
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return false, fmt.Errorf("revocation: %w", err)
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := s.http.Do(req)
	if err != nil {
		return false, fmt.Errorf("revocation: cannot reach the feed: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("revocation: the feed answered %s: check the subscriber's certificate", resp.Status)
	}
	accepted = true
	if s.cfg.OnConnect != nil {
		s.cfg.OnConnect()
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<30) // a snapshot is one line
	var event string
	var data []byte
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case len(line) == 0:
			if err := s.dispatch(event, data); err != nil {
				return accepted, err
			}
			event, data = "", data[:0]
		case line[0] == ':': // keep-alive comment
		default:
			field, value, _ := strings.Cut(string(line), ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				event = value
			case "data":
				data = append(data, value...)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return accepted, fmt.Errorf("revocation: reading the feed: %w", err)
	}
	return accepted, errors.New("revocation: the server closed the feed")
}

// dispatch applies one server-sent event.
func (s *Subscriber) dispatch(event string, data []byte) error {
	switch event {
	case "":
		return nil
	case "snapshot":
		var snap Snapshot
		if err := json.Unmarshal(data, &snap); err != nil {
			return fmt.Errorf("revocation: unreadable snapshot: %w", err)
		}
		s.set.Reset(snap)
		if s.cfg.OnSnapshot != nil {
			s.cfg.OnSnapshot(snap)
		}
	default:
		var e Event
		if err := json.Unmarshal(data, &e); err != nil {
			return fmt.Errorf("revocation: unreadable event: %w", err)
		}
		if s.set.Apply(e) && s.cfg.OnEvent != nil {
			s.cfg.OnEvent(e)
		}
	}
	return nil
}
