package revocation

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
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
	// OnReset after the Set switched to a new snapshot; neither may block
	// for long.
	OnEvent func(Event)
	OnReset func(SnapshotInfo)
	// OnSnapshot, when set, is called after each snapshot with all of it.
	//
	// Deprecated: the Subscriber never holds a whole snapshot otherwise
	// (it arrives in parts): with OnSnapshot set, each one is copied out
	// of the Set for the call. Use OnReset, and read the Set.
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
	q.Set("snapshot", "chunked")
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
	return accepted, s.read(resp.Body)
}

// read applies the server-sent events of one connection until it ends. A
// snapshot in parts that the connection does not finish is dropped with
// it: the Set keeps its state and the next connection resumes from there.
func (s *Subscriber) read(body io.Reader) error {
	lr := newLineReader(body)
	var event string
	var data []byte
	var b *building // the snapshot arriving in parts, if one is
	for {
		// A one-event snapshot from a server that predates parts is one
		// line; every other line is short.
		limit := MaxLineBytes
		if event == "snapshot" {
			limit = legacySnapshotBytes
		}
		line, err := lr.next(limit, event)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("revocation: the server closed the feed")
			}
			var tooLong *LineTooLongError
			if errors.As(err, &tooLong) {
				return err
			}
			return fmt.Errorf("revocation: reading the feed: %w", err)
		}
		switch {
		case len(line) == 0:
			if b, err = s.dispatch(b, event, data); err != nil {
				return err
			}
			if cap(data) > 2*MaxLineBytes {
				data = nil // a one-event snapshot's data: do not keep it
			}
			event, data = "", data[:0]
		case line[0] == ':': // keep-alive comment
		default:
			field, value, _ := bytes.Cut(line, []byte(":"))
			value = bytes.TrimPrefix(value, []byte(" "))
			switch string(field) {
			case "event":
				event = string(value)
			case "data":
				if len(data)+len(value) > limit {
					return &LineTooLongError{Limit: limit, Event: event}
				}
				data = append(data, value...)
			}
		}
	}
}

// dispatch applies one server-sent event, given the snapshot arriving in
// parts (nil if none is), and returns that snapshot as it stands after
// the event.
func (s *Subscriber) dispatch(b *building, event string, data []byte) (*building, error) {
	if b != nil && event != "" && event != EventSnapshotPart && event != EventSnapshotEnd {
		return nil, fmt.Errorf("revocation: a %q event inside the snapshot at sequence %d (after part %d): the set is unchanged, reconnecting", event, b.seq, b.parts)
	}
	switch event {
	case "":
		return b, nil
	case EventSnapshotBegin:
		var begin SnapshotBegin
		if err := json.Unmarshal(data, &begin); err != nil {
			return nil, fmt.Errorf("revocation: unreadable start of a snapshot: %w", err)
		}
		return newBuilding(begin)
	case EventSnapshotPart:
		if b == nil {
			return nil, errors.New("revocation: a snapshot part without the start of a snapshot: reconnecting")
		}
		var part SnapshotPart
		if err := json.Unmarshal(data, &part); err != nil {
			return nil, fmt.Errorf("revocation: unreadable snapshot part after part %d: %w", b.parts, err)
		}
		return b, b.add(part)
	case EventSnapshotEnd:
		if b == nil {
			return nil, errors.New("revocation: the end of a snapshot that never started: reconnecting")
		}
		var end SnapshotEnd
		if err := json.Unmarshal(data, &end); err != nil {
			return nil, fmt.Errorf("revocation: unreadable end of a snapshot: %w", err)
		}
		info, err := b.end(end)
		if err != nil {
			return nil, err
		}
		s.set.install(b.seq, b.st)
		s.reset(info)
		return nil, nil
	case "snapshot":
		// One event, from a server that predates parts.
		var snap Snapshot
		if err := json.Unmarshal(data, &snap); err != nil {
			return nil, fmt.Errorf("revocation: unreadable snapshot: %w", err)
		}
		s.set.Reset(snap)
		s.reset(SnapshotInfo{Seq: snap.Seq, Revoked: len(snap.Revoked), Denied: len(snap.Denied)})
	default:
		var e Event
		if err := json.Unmarshal(data, &e); err != nil {
			return nil, fmt.Errorf("revocation: unreadable event: %w", err)
		}
		if s.set.Apply(e) && s.cfg.OnEvent != nil {
			s.cfg.OnEvent(e)
		}
	}
	return nil, nil
}

// reset calls the hooks for a snapshot the Set switched to.
func (s *Subscriber) reset(info SnapshotInfo) {
	if s.cfg.OnReset != nil {
		s.cfg.OnReset(info)
	}
	if s.cfg.OnSnapshot != nil {
		s.cfg.OnSnapshot(s.set.snapshot())
	}
}
