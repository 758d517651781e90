package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/auditlog"
	"github.com/mica-pki/mica/internal/duration"
	"github.com/mica-pki/mica/internal/store"
)

// auditPage is how many leaves one request fetches.
const auditPage = 10000

func auditCommands() map[string]command {
	return map[string]command{
		"tail":       {summary: "print the latest events (--follow to keep printing)", run: runAuditTail},
		"search":     {summary: "find events by identity, action and time", run: runAuditSearch},
		"export":     {summary: "write the whole log as JSON lines, for a SIEM", run: runAuditExport},
		"proof":      {summary: "prove a certificate's issuance is in the log, verified here", args: "SERIAL", run: runAuditProof},
		"verify":     {summary: "recompute the whole log here and check every signed checkpoint", run: runAuditVerify},
		"checkpoint": {summary: "print the latest signed checkpoint, for a witness to keep", run: runAuditCheckpoint},
	}
}

// auditFlags adds the pinned log key flag to the client flags.
type auditFlags struct {
	clientFlags
	logKey string
}

func (af *auditFlags) register(env *cliEnv, name string) *flag.FlagSet {
	fs := newFlags(env, name)
	af.clientFlags.register(fs, env, true)
	fs.StringVar(&af.logKey, "log-key", env.getenv("MICA_LOG_KEY"), "the log's verifier key to pin: the key, what GET /v1/audit/key answers, or a file holding either (env MICA_LOG_KEY; default: ask the server)")
	return fs
}

// verifierKey is the pinned key, else the server's.
func (af *auditFlags) verifierKey(ctx context.Context, c *client.Client) (string, error) {
	if af.logKey != "" {
		return pinnedKey(af.logKey)
	}
	k, err := c.AuditKey(ctx)
	if err != nil {
		return "", err
	}
	return k.VerifierKey, nil
}

// pinnedKey reads --log-key: a note verifier key, the JSON that
// GET /v1/audit/key answers ({"verifier_key": …}), or a file holding either.
func pinnedKey(v string) (string, error) {
	s := strings.TrimSpace(v)
	if data, err := os.ReadFile(v); err == nil {
		s = strings.TrimSpace(string(data))
	}
	if strings.HasPrefix(s, "{") {
		var k client.AuditKey
		if err := json.Unmarshal([]byte(s), &k); err != nil || k.VerifierKey == "" {
			return "", usageError("--log-key holds JSON without a verifier_key: give what GET /v1/audit/key answers, or its verifier_key")
		}
		s = k.VerifierKey
	}
	if _, err := note.NewVerifier(s); err != nil {
		return "", usageError("--log-key %q is not the log's verifier key (NAME+HASH+KEY, the verifier_key of GET /v1/audit/key): %v", s, err)
	}
	return s, nil
}

func toEvent(e client.AuditEvent) store.Event {
	return store.Event{
		Seq: e.Seq, LeafIndex: e.LeafIndex, LeafHash: e.LeafHash, Time: e.Time, Actor: e.Actor, Source: e.Source,
		Action: store.Action(e.Action), Serial: e.Serial, Fingerprint: e.Fingerprint, Identity: e.Identity,
		Profile: e.Profile, Outcome: e.Outcome, Detail: e.Detail,
	}
}

func printEventsTable(w io.Writer, evs []client.AuditEvent) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, e := range evs {
		subject := e.Identity
		if e.Serial != "" {
			subject += " " + e.Serial
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.LeafIndex, e.Time.Format(time.RFC3339), e.Action, e.Actor, e.Source, subject, e.Outcome, e.Detail)
	}
	tw.Flush()
}

func runAuditTail(ctx context.Context, env *cliEnv, args []string) error {
	var af auditFlags
	fs := af.register(env, "audit tail")
	n := fs.Int("n", 20, "how many of the latest events to print")
	follow := fs.Bool("follow", false, "keep printing new events until interrupted")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	c, err := af.client(true)
	if err != nil {
		return err
	}
	defer c.Close()
	cp, err := c.AuditCheckpoint(ctx)
	if err != nil {
		return err
	}
	next := max(0, cp.Size-int64(*n))
	for {
		evs, err := c.AuditLeaves(ctx, next, auditPage)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		printEventsTable(env.stdout, evs)
		next += int64(len(evs))
		if len(evs) == auditPage {
			continue
		}
		if !*follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func runAuditSearch(ctx context.Context, env *cliEnv, args []string) error {
	var af auditFlags
	fs := af.register(env, "audit search")
	var f client.AuditFilter
	fs.StringVar(&f.Identity, "identity", "", "only events about this identity")
	fs.StringVar(&f.Action, "action", "", "only this action, e.g. cert.issued, cert.revoked, auth.failed")
	since := fs.String("since", "", "only events since this long ago (24h, 7d) or this RFC 3339 time")
	fs.IntVar(&f.Limit, "limit", 1000, "at most this many")
	output := fs.String("output", "table", "table or jsonl")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if *since != "" {
		if d, err := duration.Parse(*since); err == nil {
			f.Since = time.Now().Add(-d)
		} else if t, err := time.Parse(time.RFC3339, *since); err == nil {
			f.Since = t
		} else {
			return usageError("--since %q is neither a duration like 24h or 7d nor an RFC 3339 time", *since)
		}
	}
	if *output != "table" && *output != "jsonl" {
		return usageError("--output must be table or jsonl, not %q", *output)
	}
	c, err := af.client(true)
	if err != nil {
		return err
	}
	defer c.Close()
	evs, err := c.AuditEvents(ctx, f)
	if err != nil {
		return err
	}
	if *output == "jsonl" {
		return writeJSONL(env.stdout, evs)
	}
	printEventsTable(env.stdout, evs)
	return nil
}

func writeJSONL(w io.Writer, evs []client.AuditEvent) error {
	enc := json.NewEncoder(w)
	for _, e := range evs {
		if err := enc.Encode(e); err != nil {
			return err
		}
	}
	return nil
}

func runAuditExport(ctx context.Context, env *cliEnv, args []string) error {
	var af auditFlags
	fs := af.register(env, "audit export")
	format := fs.String("format", "jsonl", "jsonl (one event per line)")
	start := fs.Int64("start", 0, "first leaf index to export")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if *format != "jsonl" {
		return usageError("--format must be jsonl, not %q", *format)
	}
	c, err := af.client(true)
	if err != nil {
		return err
	}
	defer c.Close()
	for next := *start; ; {
		evs, err := c.AuditLeaves(ctx, next, auditPage)
		if err != nil {
			return err
		}
		if err := writeJSONL(env.stdout, evs); err != nil {
			return err
		}
		next += int64(len(evs))
		if len(evs) < auditPage {
			return nil
		}
	}
}

func runAuditProof(ctx context.Context, env *cliEnv, args []string) error {
	var af auditFlags
	fs := af.register(env, "audit proof")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError("audit proof needs one certificate serial (hex), e.g. `mica audit proof 1a2b…`")
	}
	c, err := af.client(true)
	if err != nil {
		return err
	}
	defer c.Close()
	vkey, err := af.verifierKey(ctx, c)
	if err != nil {
		return err
	}
	p, err := c.AuditProof(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	cp, err := auditlog.OpenCheckpoint([]byte(p.Checkpoint.Note), vkey)
	if err != nil {
		return err
	}
	ev := toEvent(p.Event)
	if ev.Serial != strings.ToLower(fs.Arg(0)) {
		return fmt.Errorf("audit: the server proved an event about %q, not %s", ev.Serial, fs.Arg(0))
	}
	if err := auditlog.VerifyInclusion(&ev, ev.LeafIndex, cp, p.Hashes); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "verified: %s of %s (%s) is leaf %d of the log signed at size %d\n%s",
		ev.Action, ev.Serial, ev.Identity, ev.LeafIndex, cp.Size, p.Checkpoint.Note)
	return nil
}

func runAuditVerify(ctx context.Context, env *cliEnv, args []string) error {
	var af auditFlags
	fs := af.register(env, "audit verify")
	savedPath := fs.String("checkpoint", "", "a checkpoint saved earlier (`mica audit checkpoint > saved.txt`); the log must still extend it")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	var saved []byte
	if *savedPath != "" {
		var err error
		if saved, err = os.ReadFile(*savedPath); err != nil {
			return fmt.Errorf("reading the saved checkpoint: %w", err)
		}
	}
	c, err := af.client(true)
	if err != nil {
		return err
	}
	defer c.Close()
	vkey, err := af.verifierKey(ctx, c)
	if err != nil {
		return err
	}
	started := time.Now()
	var notes [][]byte
	for after := int64(0); ; {
		cps, err := c.AuditCheckpoints(ctx, after, auditPage)
		if err != nil {
			return err
		}
		for _, cp := range cps {
			notes = append(notes, []byte(cp.Note))
			after = cp.Size
		}
		if len(cps) < auditPage {
			break
		}
	}
	v, err := auditlog.NewVerification(vkey, notes, saved)
	if err != nil {
		return err
	}
	for next := int64(0); ; {
		evs, err := c.AuditLeaves(ctx, next, auditPage)
		if err != nil {
			return err
		}
		for _, e := range evs {
			ev := toEvent(e)
			if err := v.Add(&ev); err != nil {
				return err
			}
		}
		next += int64(len(evs))
		if len(evs) < auditPage {
			break
		}
	}
	res, err := v.Finish()
	if err != nil {
		return err
	}
	// The server's own consistency proof must agree too: it is what a
	// witness without the leaves would check.
	if saved != nil {
		old, _ := auditlog.OpenCheckpoint(saved, vkey)
		latest, err := c.AuditCheckpoint(ctx)
		if err != nil {
			return err
		}
		cur, err := auditlog.OpenCheckpoint([]byte(latest.Note), vkey)
		if err != nil {
			return err
		}
		if cur.Size >= old.Size {
			pr, err := c.AuditConsistency(ctx, old.Size, cur.Size)
			if err != nil {
				return err
			}
			if err := auditlog.VerifyConsistency(old, cur, pr.Hashes); err != nil {
				return err
			}
		}
		fmt.Fprintf(env.stdout, "the log extends your saved checkpoint of size %d\n", old.Size)
	}
	if res.Checkpoints == 0 {
		return errors.New("audit: the log has no signed checkpoint yet; nothing vouches for its leaves: try again in a few seconds")
	}
	fmt.Fprintf(env.stdout, "verified %d leaves against %d signed checkpoints (latest covers %d leaves) in %s\n",
		res.Leaves, res.Checkpoints, res.Covered, time.Since(started).Round(time.Millisecond))
	return nil
}

func runAuditCheckpoint(ctx context.Context, env *cliEnv, args []string) error {
	var af auditFlags
	fs := af.register(env, "audit checkpoint")
	if err := parse(env, fs, args); err != nil {
		return err
	}
	c, err := af.client(true)
	if err != nil {
		return err
	}
	defer c.Close()
	vkey, err := af.verifierKey(ctx, c)
	if err != nil {
		return err
	}
	cp, err := c.AuditCheckpoint(ctx)
	if err != nil {
		return err
	}
	if _, err := auditlog.OpenCheckpoint([]byte(cp.Note), vkey); err != nil {
		return err
	}
	fmt.Fprint(env.stdout, cp.Note)
	return nil
}
