package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/duration"
)

func reportCommands() map[string]command {
	return map[string]command{
		"expiring": {summary: "certificates expiring within a window that nothing has replaced, by profile and owner", run: runReportExpiring},
	}
}

func runReportExpiring(ctx context.Context, env *cliEnv, args []string) error {
	fs, cf := apiFlags(env, "report expiring")
	var q client.ExpiringQuery
	fs.StringVar(&q.Within, "within", "30d", "window: certificates expiring within this long, like 30d, 12h or 90m")
	fs.StringVar(&q.Profile, "profile", "", "only this profile")
	fs.IntVar(&q.Limit, "limit", 1000, "list at most this many certificates (counts always cover all)")
	output := fs.String("output", "table", "table, json or csv")
	c, err := cf.connect(env, fs, args)
	if err != nil {
		return err
	}
	defer c.Close()
	if d, err := duration.Parse(q.Within); err != nil || d <= 0 {
		return usageError("--within %q is not a positive duration like 30d, 12h or 90m", q.Within)
	}
	if *output != "table" && *output != "json" && *output != "csv" {
		return usageError("--output must be table, json or csv, not %q", *output)
	}
	rep, err := c.ExpiringReport(ctx, q)
	if err != nil {
		return err
	}
	if rep.Listed < rep.Total && *output != "json" {
		fmt.Fprintf(env.stderr, "mica: listing %d of %d certificates at risk: raise --limit to see them all\n", rep.Listed, rep.Total)
	}
	switch *output {
	case "json":
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	case "csv":
		return rep.WriteCSV(env.stdout)
	}
	if err := expiringTable(env.stdout, rep); err != nil {
		return err
	}
	return discoveredTable(env.stdout, rep.Discovered, rep.GeneratedAt)
}

// expiringTable writes the groups, then each group's certificates.
func expiringTable(w io.Writer, rep *client.ExpiringReport) error {
	now := rep.GeneratedAt
	fmt.Fprintf(w, "%d certificates expire within %s (before %s) with no newer certificate of their identity, in %d groups\n",
		rep.Total, rep.Within, rep.ExpiringBefore.Format("2006-01-02 15:04 MST"), len(rep.Groups))
	if len(rep.Groups) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nPROFILE\tOWNER\tCOUNT\tEARLIEST EXPIRY\tIN")
	for _, g := range rep.Groups {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", g.Profile, g.Owner, g.Count,
			g.EarliestExpiry.UTC().Format("2006-01-02 15:04"), remaining(g.EarliestExpiry, now))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, g := range rep.Groups {
		if len(g.Certificates) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s / %s\n", g.Profile, g.Owner)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  SERIAL\tIDENTITY\tEXPIRES\tIN")
		for _, c := range g.Certificates {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", c.Serial, c.Identity, c.NotAfter.UTC().Format("2006-01-02 15:04"), remaining(c.NotAfter, now))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}
