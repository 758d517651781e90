package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestAgentConfig(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte(`server: https://ca.internal:8443
out: /var/lib/mica-agent
owner: "101:102"
bundle_interval: 1m
reload:
  pid_file: /run/nginx.pid
  signal: USR1
`), 0o644); err != nil {
		t.Fatal(err)
	}
	file, err := loadAgentConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	merged := mergeAgentConfig(file, agentConfig{Out: "/srv/creds"})
	opts, err := merged.agentOptions()
	if err != nil {
		t.Fatal(err)
	}
	if merged.Server != "https://ca.internal:8443" || opts.Files.Dir != "/srv/creds" || opts.Files.UID != 101 || opts.Files.GID != 102 ||
		opts.BundleInterval != time.Minute || len(opts.Hooks) != 1 {
		t.Errorf("merged config = %+v, options = %+v", merged, opts)
	}

	if err := os.WriteFile(cfgPath, []byte("server: x\nsocket_path: y\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadAgentConfig(cfgPath); err == nil {
		t.Error("unknown field accepted")
	}

	bad := []struct {
		name string
		cfg  agentConfig
	}{
		{"owner not numeric", agentConfig{Owner: "nginx"}},
		{"group not numeric", agentConfig{Owner: "101:www"}},
		{"bundle interval", agentConfig{BundleInterval: "often"}},
		{"key type", agentConfig{KeyType: "dsa"}},
		{"signal", agentConfig{Reload: agentReload{PIDFile: "/run/x.pid", Signal: "KILL"}}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.cfg.agentOptions(); err == nil {
				t.Errorf("%+v accepted", tt.cfg)
			}
		})
	}
}
