package acme

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	l := newLimiter(3, 2, clock, nil)
	tests := []struct {
		name     string
		account  string
		idents   []string
		advance  time.Duration
		wantWait bool
	}{
		{"first", "a", []string{"x.test"}, 0, false},
		{"second", "a", []string{"x.test"}, 0, false},
		{"identifier exhausted", "a", []string{"x.test"}, 0, true},
		{"other identifier", "a", []string{"y.test"}, 0, false},
		{"account exhausted", "a", []string{"z.test"}, 0, true},
		{"other account", "b", []string{"z.test"}, 0, false},
		{"refilled after an hour", "a", []string{"x.test"}, time.Hour, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now = now.Add(tt.advance)
			if wait := l.allowOrder(context.Background(), tt.account, tt.idents); (wait > 0) != tt.wantWait {
				t.Errorf("allowOrder = wait %ds, want wait=%v", wait, tt.wantWait)
			}
		})
	}
}

func TestLimiterConcurrent(t *testing.T) {
	l := newLimiter(50, 1000, time.Now, nil)
	var mu sync.Mutex
	allowed := 0
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() {
			if l.allowOrder(context.Background(), "a", []string{"x.test"}) == 0 {
				mu.Lock()
				allowed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if allowed < 50 || allowed > 51 {
		t.Errorf("%d orders allowed, want 50 (51 with refill)", allowed)
	}
}

func TestCheckContacts(t *testing.T) {
	tests := []struct {
		contact []string
		want    string
	}{
		{nil, ""},
		{[]string{"mailto:ops@example.org"}, ""},
		{[]string{"tel:+1555"}, errUnsupportedContact},
		{[]string{"mailto:not an address"}, errInvalidContact},
		{[]string{"mailto:a@example.org,b@example.org"}, errInvalidContact},
	}
	for _, tt := range tests {
		p := checkContacts(tt.contact)
		got := ""
		if p != nil {
			got = p.Type[len(errorNS):]
		}
		if got != tt.want {
			t.Errorf("checkContacts(%v) = %q, want %q", tt.contact, got, tt.want)
		}
	}
}

func TestSettings(t *testing.T) {
	const url = "https://ca.test:8443/acme"
	tests := []struct {
		name    string
		set     Settings
		wantErr bool
	}{
		{"defaults", Settings{Profile: "web", URL: url}, false},
		{"no profile", Settings{URL: url}, true},
		{"no url", Settings{Profile: "web"}, true},
		{"http url", Settings{Profile: "web", URL: "http://ca.test/acme/"}, true},
		{"url without host", Settings{Profile: "web", URL: "https:///acme/"}, true},
		{"url with user", Settings{Profile: "web", URL: "https://u:p@ca.test/acme/"}, true},
		{"url with query", Settings{Profile: "web", URL: "https://ca.test/acme/?x=1"}, true},
		{"url with fragment", Settings{Profile: "web", URL: "https://ca.test/acme/#x"}, true},
		{"relative url", Settings{Profile: "web", URL: "/acme/"}, true},
		{"bad port", Settings{Profile: "web", URL: url, HTTP01Port: 70000}, true},
		{"bad resolver", Settings{Profile: "web", URL: url, Resolver: "127.0.0.1"}, true},
		{"eab required without keys", Settings{Profile: "web", URL: url, ExternalAccountRequired: true}, true},
		{"short eab key", Settings{Profile: "web", URL: url, EABKeys: map[string]string{"k": "AAAA"}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := tt.set.check()
			if (err != nil) != tt.wantErr {
				t.Fatalf("check: %v, want error %v", err, tt.wantErr)
			}
			if err == nil && (got.HTTP01Port != 80 || got.TLSALPN01Port != 443) {
				t.Errorf("default ports %d/%d, want 80/443", got.HTTP01Port, got.TLSALPN01Port)
			}
			if err == nil && got.URL != url+"/" {
				t.Errorf("URL %q, want %q (with the trailing slash every URL is built on)", got.URL, url+"/")
			}
		})
	}
}

func TestSerialFromCertID(t *testing.T) {
	tests := map[string]string{
		"aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE": "87654321",
		"no-dot":                              "",
		"a.!!":                                "",
	}
	for id, want := range tests {
		if got := serialFromCertID(id); got != want {
			t.Errorf("serialFromCertID(%q) = %q, want %q", id, got, want)
		}
	}
}
