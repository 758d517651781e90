package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/mica-pki/mica/internal/web"
)

func consoleCommands() map[string]command {
	return map[string]command{
		"login": {summary: "print a one-time link (valid a minute) that signs this credential in to the web console", run: runConsoleLogin},
	}
}

// runConsoleLogin asks the server, with an administrator's credential
// over mTLS, for a one-time sign-in link and prints it: the URL alone on
// stdout, what it does on stderr.
func runConsoleLogin(ctx context.Context, env *cliEnv, args []string) error {
	fs, cf := apiFlags(env, "console login")
	c, err := cf.connect(env, fs, args)
	if err != nil {
		return err
	}
	defer c.Close()
	l, err := c.CreateConsoleLink(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stderr, "open this link in your browser before %s (within %s; it works once) to sign in as %s:\n",
		l.ExpiresAt.Local().Format("15:04:05"), time.Until(l.ExpiresAt).Round(time.Second), l.Identity)
	fmt.Fprintln(env.stdout, c.URL(l.Path))
	return nil
}

// withConsole mounts the web console under /ui/ next to the API; its Run
// is for serve to start with its other loops.
func withConsole(p *parts, cfg *Config, api http.Handler, log *slog.Logger) (http.Handler, *web.Console, error) {
	console, err := web.New(web.Config{Authority: p.authority, TrustDomain: cfg.TrustDomain, Metrics: p.registry, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(web.Prefix, console)
	mux.Handle("/", api)
	return mux, console, nil
}
