package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mica-pki/mica/client"
)

// printDiscovered shows discovered certificates: what each is, who issued
// it, when it expires, what is wrong with it, and where it was seen.
func printDiscovered(w io.Writer, certs []client.DiscoveredCertificate, format string, now time.Time) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if certs == nil {
			certs = []client.DiscoveredCertificate{}
		}
		return enc.Encode(certs)
	case "csv":
		cw := csv.NewWriter(w)
		cw.Write([]string{"fingerprint_sha256", "identity", "class", "issuer", "not_after", "findings", "owner", "first_seen", "last_seen", "gone_at", "locations"})
		for _, c := range certs {
			gone := ""
			if c.GoneAt != nil {
				gone = c.GoneAt.Format(time.RFC3339)
			}
			cw.Write([]string{c.Fingerprint, c.Identity, c.Class, c.Issuer, c.NotAfter.Format(time.RFC3339), strings.Join(c.Findings, " "), c.Owner,
				c.FirstSeen.Format(time.RFC3339), c.LastSeen.Format(time.RFC3339), gone, strings.Join(locations(c), " ")})
		}
		cw.Flush()
		return cw.Error()
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FINGERPRINT\tIDENTITY\tCLASS\tEXPIRES\tREMAINING\tFINDINGS\tOWNER\tSEEN")
	for _, c := range certs {
		seen := "live"
		if c.GoneAt != nil {
			seen = "gone " + humanDuration(now.Sub(*c.GoneAt)) + " ago"
		}
		if l := locations(c); len(l) > 0 {
			seen = strings.Join(l, " ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Fingerprint[:16], c.Identity, c.Class, c.NotAfter.UTC().Format("2006-01-02 15:04"),
			remaining(c.NotAfter, now), orDash(strings.Join(c.Findings, ",")), orDash(c.Owner), seen)
	}
	return tw.Flush()
}

// locations are the places a certificate is still seen, when the listing
// asked for sightings.
func locations(c client.DiscoveredCertificate) []string {
	var out []string
	for _, s := range c.Sightings {
		if s.GoneAt == nil {
			out = append(out, s.Location)
		}
	}
	return out
}

// discoveredTable adds the expiry report's discovered part.
func discoveredTable(w io.Writer, d *client.DiscoveredExpiring, now time.Time) error {
	if d == nil {
		return nil
	}
	fmt.Fprintf(w, "\n%d certificates found deployed that mica did not issue expire within the window, in %d groups\n", d.Total, len(d.Groups))
	if len(d.Groups) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nCLASS\tOWNER\tCOUNT\tEARLIEST EXPIRY\tIN")
	for _, g := range d.Groups {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", g.Class, orDash(g.Owner), g.Count, g.EarliestExpiry.UTC().Format("2006-01-02 15:04"), remaining(g.EarliestExpiry, now))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, g := range d.Groups {
		if len(g.Certificates) == 0 {
			continue
		}
		fmt.Fprintf(w, "\ndiscovered %s / %s\n", g.Class, orDash(g.Owner))
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  FINGERPRINT\tIDENTITY\tEXPIRES\tIN\tFINDINGS")
		for _, c := range g.Certificates {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", c.Fingerprint[:16], c.Identity, c.NotAfter.UTC().Format("2006-01-02 15:04"),
				remaining(c.NotAfter, now), orDash(strings.Join(c.Findings, ",")))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}
