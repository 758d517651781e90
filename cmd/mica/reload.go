package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"strings"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/store"
)

// reloader applies the config file again when serve gets SIGHUP. The file
// is read and validated exactly as at start-up; a file that does not
// validate changes nothing. Its policy (profiles, admins, roles, approvals)
// is proposed as a new policy version, as `mica policy propose` would, by
// the file itself (authority.ConfigFile): it becomes active at once — on
// this server and, within seconds, on every server — unless the policy's
// approval rules hold policy changes for approvers. Settings read only at
// start are named when they changed, for a restart to apply; trust_domain
// and server_names, which the policy is built from, refuse the reload
// until then.
type reloader struct {
	path string
	// propose puts a policy document to the authority.
	propose func(ctx context.Context, p authority.Principal, doc []byte, reason string) (store.PolicyVersion, error)
	// started holds the start-up values of the restart-only settings, as
	// the file said them (before flags).
	started map[string]any
	hash    string
	record  func(ctx context.Context, action store.Action, detail string) error
	log     *slog.Logger
}

// newReloader reloads path into p's authority; data is the file serve started
// with and started its restart-only settings (restartOnly, before flags).
func newReloader(path string, data []byte, started map[string]any, p *parts, log *slog.Logger) *reloader {
	return &reloader{path: path, propose: p.authority.ProposePolicy, started: started, hash: configHash(data),
		record: p.authority.RecordSystemEvent, log: log}
}

// restartOnly are the settings a running server reads only at start, by
// their names in mica.yaml.
func restartOnly(c *Config) map[string]any {
	return map[string]any{
		"trust_domain": c.TrustDomain, "server_names": c.ServerNames,
		"listen": c.Listen, "http_listen": c.HTTPListen, "metrics_listen": *c.MetricsListen,
		"public_url": c.publicURLAsGiven(), "database": c.Database, "acme": c.ACME,
		"tracing": c.Tracing, "ocsp": c.OCSP, "limits": c.Limits, "anomalies": c.Anomalies,
		"discovery": c.Discovery, "webhooks": c.Webhooks,
	}
}

// policyInputs are the restart-only settings the policy is built from: a
// change to them cannot be applied by a new policy version.
var policyInputs = []string{"trust_domain", "server_names"}

// run reloads on every signal from hup until ctx ends.
func (r *reloader) run(ctx context.Context, hup <-chan os.Signal) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			if err := r.reload(ctx); err != nil {
				r.log.Error("config not reloaded: the running config stays", slog.String("config", r.path), slog.String("error", err.Error()))
			}
		}
	}
}

// reload reads, validates and proposes the config file once.
func (r *reloader) reload(ctx context.Context) error {
	data, err := os.ReadFile(r.path)
	if err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	hash := configHash(data)
	if hash == r.hash {
		r.log.Info("config reload: the file is unchanged", slog.String("config", r.path))
		return nil
	}
	cfg, err := parseConfig(data, r.path)
	if err != nil {
		return err
	}
	var pending []string
	for name, now := range restartOnly(cfg) {
		if !reflect.DeepEqual(now, r.started[name]) {
			pending = append(pending, name)
		}
	}
	slices.Sort(pending)
	for _, name := range policyInputs {
		if slices.Contains(pending, name) {
			return fmt.Errorf("%s changed, and the policy is built from it: restart mica to apply it (restart-only: %s)", name, strings.Join(pending, ", "))
		}
	}
	detail := fmt.Sprintf("reloaded on SIGHUP: config %s sha256:%s, %d profiles", r.path, hash, len(cfg.Profiles))
	if len(pending) > 0 {
		detail += "; restart needed for: " + strings.Join(pending, ", ")
	}
	if err := r.record(ctx, store.ActionPolicyLoaded, detail); err != nil {
		return err
	}
	r.hash = hash
	attrs := []any{slog.String("config", r.path), slog.String("sha256", hash), slog.Int("profiles", len(cfg.Profiles))}
	if len(pending) > 0 {
		attrs = append(attrs, slog.String("restart_needed_for", strings.Join(pending, ", ")))
	}
	v, err := r.propose(ctx, authority.ConfigFile(r.path), cfg.doc, "SIGHUP")
	switch kind := authority.KindOf(err); {
	case err == nil && v.Status == store.PolicyActive:
		r.log.Info("config reloaded: its policy is active", append(attrs, slog.Int64("policy_version", v.Version))...)
	case kind == authority.KindApprovalPending:
		var e *authority.Error
		if errors.As(err, &e) && e.Pending != nil {
			attrs = append(attrs, slog.String("approval", e.Pending.ID))
		}
		r.log.Warn("config reloaded: its policy waits for approvers (`mica approvals list`)", append(attrs, slog.Int64("policy_version", v.Version))...)
	case kind == authority.KindConflict:
		r.log.Info("config reloaded: its policy is the active one already", attrs...)
	case err != nil:
		return err
	default:
		r.log.Info("config reloaded", attrs...)
	}
	return nil
}
