package revocation_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mica-pki/mica/revocation"
)

// rawFeed is a real HTTPS server that answers every request with body as
// the event stream, then ends it; it records the queries it was asked.
func rawFeed(t *testing.T, body string) (*httptest.Server, *[]string) {
	t.Helper()
	var queries []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		queries = append(queries, r.URL.RawQuery)
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv, &queries
}

func event(name string, v any) string {
	data, _ := json.Marshal(v)
	return fmt.Sprintf("event: %s\ndata: %s\n\n", name, data)
}

func revoked(serials ...string) []revocation.Event {
	var out []revocation.Event
	for _, s := range serials {
		out = append(out, revocation.Event{Kind: revocation.KindRevoked, Serial: s, NotAfter: time.Now().Add(time.Hour)})
	}
	return out
}

// runOnce runs one connection of a Subscriber whose Set starts with one
// revoked serial at sequence 7, and returns why it ended.
func runOnce(t *testing.T, body string) (*revocation.Subscriber, []string, error) {
	t.Helper()
	srv, queries := rawFeed(t, body)
	var resets []revocation.SnapshotInfo
	sub, err := revocation.NewSubscriber(revocation.Config{URL: srv.URL + "/v1/revocations/feed",
		TLS:     srv.Client().Transport.(*http.Transport).TLSClientConfig,
		OnReset: func(i revocation.SnapshotInfo) { resets = append(resets, i) }})
	if err != nil {
		t.Fatal(err)
	}
	sub.Set().Reset(revocation.Snapshot{Seq: 7, Revoked: revoked("old")})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // bounds a broken test
	defer cancel()
	err = sub.RunOnce(ctx)
	if len(resets) > 0 && sub.Set().Seq() == 7 {
		t.Errorf("OnReset %+v, yet the set did not change", resets)
	}
	return sub, *queries, err
}

func TestSnapshotInParts(t *testing.T) {
	body := event(revocation.EventSnapshotBegin, revocation.SnapshotBegin{Seq: 40}) +
		": keep-alive\n\n" +
		event(revocation.EventSnapshotPart, revocation.SnapshotPart{Seq: 40, Part: 1, Revoked: revoked("a", "b")}) +
		event(revocation.EventSnapshotPart, revocation.SnapshotPart{Seq: 40, Part: 2, Revoked: revoked("c"), Denied: []string{"spiffe://example.test/x"}}) +
		"event: " + revocation.EventSnapshotEnd + "\r\nid: 40\r\ndata: {\"snapshot_seq\":40,\"parts\":2,\"revoked\":3,\"denied\":1}\r\n\r\n" +
		event(revocation.KindRevoked, revocation.Event{Seq: 41, Kind: revocation.KindRevoked, Serial: "d"})
	sub, queries, err := runOnce(t, body)
	if err == nil || !strings.Contains(err.Error(), "closed the feed") {
		t.Errorf("RunOnce = %v, want the server closed the feed", err)
	}
	if got := sub.Set().Serials(); sub.Set().Seq() != 41 || !slices.Equal(got, []string{"a", "b", "c", "d"}) || !sub.Set().Denied("spiffe://example.test/x") {
		t.Errorf("set at %d: %v %v, want at 41: a b c d and the denied identity", sub.Set().Seq(), got, sub.Set().Identities())
	}
	if len(queries) != 1 || queries[0] != "since=7&snapshot=chunked" {
		t.Errorf("asked %v, want since=7&snapshot=chunked", queries)
	}
}

// TestHostileSnapshot: a snapshot in parts that is out of order, mixed,
// miscounted, unfinished or too long is refused with an error that says
// so, and the set stays exactly as it was.
func TestHostileSnapshot(t *testing.T) {
	begin := event(revocation.EventSnapshotBegin, revocation.SnapshotBegin{Seq: 40})
	part := func(n int, serials ...string) string {
		return event(revocation.EventSnapshotPart, revocation.SnapshotPart{Seq: 40, Part: n, Revoked: revoked(serials...)})
	}
	end := func(parts, rev int) string {
		return event(revocation.EventSnapshotEnd, revocation.SnapshotEnd{Seq: 40, Parts: parts, Revoked: rev})
	}
	many := make([]string, revocation.PartEntries+1)
	for i := range many {
		many[i] = fmt.Sprint(i)
	}
	tests := []struct {
		name, body, want string
	}{
		{"PartOutOfOrder", begin + part(1, "a") + part(3, "b") + end(3, 2), "parts must come in order"},
		{"PartRepeated", begin + part(1, "a") + part(1, "a") + end(2, 2), "parts must come in order"},
		{"CountMismatch", begin + part(1, "a", "b") + end(1, 3), "incomplete"},
		{"PartsMismatch", begin + part(1, "a") + part(2, "b") + end(3, 2), "incomplete"},
		{"MixedSnapshots", begin + event(revocation.EventSnapshotPart, revocation.SnapshotPart{Seq: 41, Part: 1, Revoked: revoked("a")}), "mixed two snapshots"},
		{"EndOfAnother", begin + part(1, "a") + event(revocation.EventSnapshotEnd, revocation.SnapshotEnd{Seq: 41, Parts: 1, Revoked: 1}), "mixed two snapshots"},
		{"PartWithoutBegin", part(1, "a") + end(1, 1), "without the start"},
		{"EndWithoutBegin", end(0, 0), "never started"},
		{"ChangeInside", begin + part(1, "a") + event(revocation.KindRevoked, revocation.Event{Seq: 41, Kind: revocation.KindRevoked, Serial: "z"}), "inside the snapshot"},
		{"BeginInside", begin + part(1, "a") + begin, "inside the snapshot"},
		{"TooManyEntries", begin + part(1, many...) + end(1, len(many)), "more than a part may"},
		{"NoSerial", begin + part(1, "") + end(1, 1), "without a serial"},
		{"Unreadable", begin + "event: snapshot-part\ndata: {\"part\":\n\n", "unreadable snapshot part"},
		{"Unfinished", begin + part(1, "a") + part(2, "b"), "closed the feed"},
		{"LineTooLong", begin + "event: snapshot-part\ndata: " + strings.Repeat("x", revocation.MaxLineBytes) + "\n\n", "line of more than"},
		{"DataTooLong", begin + "event: snapshot-part\n" + strings.Repeat("data: "+strings.Repeat("x", 1000)+"\n", revocation.MaxLineBytes/1000+1) + "\n", "line of more than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sub, _, err := runOnce(t, tc.body)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "revocation: ") {
				t.Errorf("RunOnce = %v, want an error saying %q", err, tc.want)
			}
			if got := sub.Set().Serials(); sub.Set().Seq() != 7 || !slices.Equal(got, []string{"old"}) {
				t.Errorf("the set changed: at %d, %v", sub.Set().Seq(), got)
			}
		})
	}
	t.Run("LineTooLongIsTyped", func(t *testing.T) {
		_, _, err := runOnce(t, "event: revoked\ndata: "+strings.Repeat("x", revocation.MaxLineBytes+1)+"\n\n")
		var tooLong *revocation.LineTooLongError
		if !errors.As(err, &tooLong) || tooLong.Limit != revocation.MaxLineBytes || tooLong.Event != "revoked" {
			t.Errorf("RunOnce = %#v, want a LineTooLongError for the revoked event", err)
		}
	})
}

// TestOneEventSnapshotFromOlderServer: a server that predates parts
// ignores snapshot=chunked and sends one "snapshot" event, which may be far
// longer than a part's line; it is still applied, and the deprecated
// OnSnapshot hook still sees all of it.
func TestOneEventSnapshotFromOlderServer(t *testing.T) {
	var serials []string
	for i := range 12000 { // about 1.5 MiB on one line
		serials = append(serials, fmt.Sprintf("%032x", i))
	}
	srv, _ := rawFeed(t, event("snapshot", revocation.Snapshot{Seq: 9, Revoked: revoked(serials...), Denied: []string{"denied.example.test"}}))
	var got revocation.Snapshot
	var info revocation.SnapshotInfo
	sub, err := revocation.NewSubscriber(revocation.Config{URL: srv.URL + "/v1/revocations/feed",
		TLS:        srv.Client().Transport.(*http.Transport).TLSClientConfig,
		OnReset:    func(i revocation.SnapshotInfo) { info = i },
		OnSnapshot: func(s revocation.Snapshot) { got = s }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // bounds a broken test
	defer cancel()
	sub.RunOnce(ctx)
	if sub.Set().Seq() != 9 || len(sub.Set().Serials()) != len(serials) || !sub.Set().Denied("denied.example.test") {
		t.Fatalf("set at %d with %d serials", sub.Set().Seq(), len(sub.Set().Serials()))
	}
	if info != (revocation.SnapshotInfo{Seq: 9, Revoked: len(serials), Denied: 1}) || got.Seq != 9 || len(got.Revoked) != len(serials) || len(got.Denied) != 1 {
		t.Errorf("OnReset %+v, OnSnapshot at %d with %d revoked and %d denied", info, got.Seq, len(got.Revoked), len(got.Denied))
	}
}
