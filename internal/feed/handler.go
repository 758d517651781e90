package feed

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/mica-pki/mica/internal/problem"
)

// keepAlive is how often an idle stream gets a comment line, so proxies
// and the subscriber notice a dead connection.
const keepAlive = 15 * time.Second

// writeTimeout bounds each write: a subscriber that stops reading is cut
// off instead of holding a goroutine forever.
const writeTimeout = 30 * time.Second

// Handler streams the feed as server-sent events: a snapshot or the
// backlog after ?since= (or Last-Event-ID), then each change as "revoked",
// "denied" or "allowed", every one with its sequence number as the event
// id. The snapshot comes in parts (snapshot-begin, snapshot-part...,
// snapshot-end) when the request says snapshot=chunked, else as one
// "snapshot" event. Authentication is the caller's: wrap it.
func (h *Hub) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sinceText := r.URL.Query().Get("since")
		if sinceText == "" {
			sinceText = r.Header.Get("Last-Event-ID")
		}
		var since int64
		if sinceText != "" {
			var err error
			if since, err = strconv.ParseInt(sinceText, 10, 64); err != nil || since < 0 {
				problem.Write(w, http.StatusBadRequest, "invalid-request", "Invalid Request",
					"since must be the sequence number of the last change applied, a whole number (or leave it out for a snapshot)")
				return
			}
		}
		var chunked bool
		switch r.URL.Query().Get("snapshot") {
		case "chunked":
			chunked = true
		case "":
		default:
			problem.Write(w, http.StatusBadRequest, "invalid-request", "Invalid Request",
				"snapshot must be chunked (a snapshot in parts) or left out (one event)")
			return
		}
		snapshotAt, backlog, sub, err := h.subscribe(since, connQueueOf(r.Context()))
		if err != nil {
			w.Header().Set("Retry-After", "1")
			problem.Write(w, http.StatusServiceUnavailable, "not-ready", "Not Ready", err.Error())
			return
		}
		defer h.unsubscribe(sub)
		rc := http.NewResponseController(w)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		// write writes one frame and flushes it; a change counts towards
		// the subscriber's lag until the peer has taken it.
		write := func(frame []byte, change bool) error {
			rc.SetWriteDeadline(time.Now().Add(writeTimeout))
			sub.blockedSince.Store(time.Now().UnixNano())
			defer sub.blockedSince.Store(0)
			n, err := w.Write(frame)
			if err == nil {
				err = rc.Flush()
			}
			sub.wrote(n, change)
			return err
		}
		send := func(event string, id int64, v any) error {
			data, err := json.Marshal(v)
			if err != nil {
				return err
			}
			return write(fmt.Appendf(nil, "event: %s\nid: %d\ndata: %s\n\n", event, id, data), true)
		}
		if snapshotAt >= 0 {
			if h.writeSnapshot(r.Context(), snapshotAt, chunked, write) != nil {
				return
			}
			if backlog, err = h.live(sub); err != nil {
				h.cfg.Logger.LogAttrs(r.Context(), slog.LevelWarn, "revocation feed stream ended after its snapshot", slog.String("error", err.Error()))
				return
			}
		}
		for _, e := range backlog {
			if send(e.Kind, e.Seq, e) != nil {
				return
			}
		}
		if len(backlog) == 0 && snapshotAt < 0 {
			// Tell the subscriber the stream is live even when nothing
			// changed since it last heard.
			write([]byte(": resumed\n\n"), false)
		}
		tick := time.NewTicker(keepAlive)
		defer tick.Stop()
		for {
			select {
			case <-r.Context().Done():
				return
			case <-h.done:
				return
			case q, ok := <-sub.ch:
				if !ok {
					return
				}
				if send(q.Kind, q.Seq, q.Event) != nil {
					return
				}
				if h.cfg.Delivered != nil {
					h.cfg.Delivered(time.Since(q.applied))
				}
			case <-tick.C:
				if write([]byte(": keep-alive\n\n"), false) != nil {
					return
				}
			}
		}
	})
}
