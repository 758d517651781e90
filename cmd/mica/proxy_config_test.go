package main

import (
	"strings"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/proxy"
)

func TestProxyConfig(t *testing.T) {
	const listeners = `
listeners:
  - name: in
    mode: inbound
    listen: 0.0.0.0:8444
    backend: http://127.0.0.1:8080
    allow: {trust_domains: [example.org]}
    timeout: 5s
`
	cfg, err := parseProxyConfig([]byte("credentials: {dir: /srv/gw}\nrevocation: {feed: https://mica:8443}\n"+listeners), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Metrics != defaultProxyMetrics || cfg.Listeners[0].Mode != proxy.Inbound || cfg.Listeners[0].Timeout.D() != 5*time.Second {
		t.Errorf("parsed %+v", cfg)
	}
	if u, host, err := feedURL(cfg.Revocation.Feed); u != "https://mica:8443/v1/revocations/feed" || host != "mica" || err != nil {
		t.Errorf("feed URL %q, host %q, %v", u, host, err)
	}

	tests := []struct {
		name, yaml, want string
	}{
		{"unknown field", "credentials: {dir: /x}\nrevocation: {disabled: true}\nlistner: []\n", "field listner not found"},
		{"unknown listener field", "credentials: {dir: /x}\nrevocation: {disabled: true}\nlisteners: [{name: a, backnd: x}]\n", "field backnd not found"},
		{"duration without unit", "credentials: {dir: /x}\nrevocation: {disabled: true}\ndrain_timeout: 30\n" + listeners, "write durations with a unit"},
		{"no credentials", "revocation: {disabled: true}\n" + listeners, "exactly one of dir"},
		{"two credentials", "credentials: {dir: /x, workload_api: unix:///s}\nrevocation: {disabled: true}\n" + listeners, "exactly one of dir"},
		{"bad feed credentials", "credentials: {dir: /x}\nrevocation: {feed: https://m, feed_credentials: {}}\n" + listeners, "feed_credentials"},
		{"no revocation", "credentials: {dir: /x}\n" + listeners, "disabled: true to accept revoked"},
		{"disabled and feed", "credentials: {dir: /x}\nrevocation: {disabled: true, feed: https://m}\n" + listeners, "choose one"},
		{"feed over http", "credentials: {dir: /x}\nrevocation: {feed: http://m:8080}\n" + listeners, "https:// URL"},
		{"no listeners", "credentials: {dir: /x}\nrevocation: {disabled: true}\n", "no listeners"},
		{"bad listener", "credentials: {dir: /x}\nrevocation: {disabled: true}\nlisteners: [{name: a, mode: inbound, listen: ':1', backend: 'ftp://x'}]\n", "backend"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseProxyConfig([]byte(tt.yaml), "p.yaml")
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "p.yaml") {
				t.Fatalf("error %v, want one naming p.yaml and containing %q", err, tt.want)
			}
		})
	}
}
