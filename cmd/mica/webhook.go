package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/api"
	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/webhook"
)

func webhookCommands() map[string]command {
	return map[string]command{
		"status": {summary: "each endpoint's delivery state: cursor, lag, last success and error, dead letters", run: runWebhookStatus},
		"secret": {summary: "print a new signing secret for an endpoint's secret_file", run: runWebhookSecret},
	}
}

// webhookState is what the dispatcher needs of the store.
type webhookState interface {
	store.WebhookStore
	store.LeaseStore
}

// newWebhooks makes the dispatcher for the config's webhooks, or nil when
// there are none, and what the API shows of them.
func newWebhooks(p *parts, log *slog.Logger) (*webhook.Dispatcher, []api.WebhookEndpoint, error) {
	eps, err := p.cfg.webhookEndpoints()
	if err != nil || len(eps) == 0 {
		return nil, nil, err
	}
	state, ok := p.store.(webhookState)
	if !ok {
		return nil, nil, fmt.Errorf("webhooks: the %T store keeps no delivery state", p.store)
	}
	d, err := webhook.New(webhook.Config{Endpoints: eps, Log: p.store, State: state, Source: "mica://" + p.cfg.TrustDomain,
		Registerer: p.registry, Logger: log, UserAgent: "mica/" + version})
	if err != nil {
		return nil, nil, err
	}
	var shown []api.WebhookEndpoint
	for _, w := range p.cfg.Webhooks {
		shown = append(shown, api.WebhookEndpoint{Name: w.Name, URL: webhook.RedactedURL(w.URL), Types: webhookTypes(w.Types)})
	}
	return d, shown, nil
}

func runWebhookStatus(ctx context.Context, env *cliEnv, args []string) error {
	fs, cf := apiFlags(env, "webhook status")
	dead := fs.Int("dead-letters", 5, "list up to this many of each endpoint's most recent dead letters")
	output := fs.String("output", "table", "table or json")
	c, err := cf.connect(env, fs, args)
	if err != nil {
		return err
	}
	defer c.Close()
	if *output != "table" && *output != "json" {
		return usageError("--output must be table or json, not %q", *output)
	}
	hooks, err := c.Webhooks(ctx, *dead)
	if err != nil {
		return err
	}
	if *output == "json" {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(hooks)
	}
	return webhookTable(env.stdout, hooks, time.Now())
}

func webhookTable(w io.Writer, hooks []client.WebhookStatus, now time.Time) error {
	if len(hooks) == 0 {
		fmt.Fprintln(w, "no webhook endpoints: add them under webhooks: in the config (see docs/discovery.md)")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tURL\tCURSOR\tLAG\tLAST SUCCESS\tFAILURES\tDEAD LETTERS\tLAST ERROR")
	for _, h := range hooks {
		url := h.URL
		if !h.Configured {
			url = "(no longer configured)"
		}
		last := "never"
		if h.LastSuccess != nil {
			last = humanDuration(now.Sub(*h.LastSuccess)) + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%d\t%d\t%s\n", h.Name, url, h.Cursor, h.Lag, last, h.Failures, h.DeadLetters, orDash(h.LastError))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, h := range hooks {
		for _, d := range h.Dead {
			fmt.Fprintf(w, "dead letter %s: event %d after %d attempts, %s: %s\n", h.Name, d.Seq, d.Attempts, d.At.UTC().Format(time.RFC3339), d.Error)
		}
	}
	return nil
}

func runWebhookSecret(_ context.Context, env *cliEnv, args []string) error {
	fs := newFlags(env, "webhook secret")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	var key [32]byte
	rand.Read(key[:])
	fmt.Fprintln(env.stdout, "whsec_"+base64.StdEncoding.EncodeToString(key[:]))
	return nil
}

// startEventLoops prepares what follows the event log and the inventory on
// their own: it writes the discovery events a crash left unwritten, and
// hands start the expiry notices and webhook delivery, to run with serve's
// other loops until they stop (before the store closes).
func startEventLoops(ctx context.Context, start func(name string, run func(context.Context) error), p *parts, log *slog.Logger) error {
	if n, err := p.authority.FlushDiscoveryEvents(ctx); err != nil {
		log.Warn("discovery events left by an earlier run could not be written yet", slog.String("error", err.Error()))
	} else if n > 0 {
		log.Info("wrote discovery events left by an earlier run", slog.Int("events", n))
	}
	if within := p.cfg.expiryNoticeWindow(); within > 0 {
		owner := newScanID()
		start("expiry notices", func(ctx context.Context) error {
			p.authority.RunExpiryNotices(ctx, authority.ExpiryNotices{Within: within, Owner: owner})
			return nil
		})
	}
	hooks, shown, err := newWebhooks(p, log)
	if err != nil {
		return err
	}
	p.webhooks = shown
	if hooks != nil {
		start("webhook delivery", hooks.Run)
		log.Info("webhook delivery", slog.Int("endpoints", len(shown)))
	}
	return nil
}
