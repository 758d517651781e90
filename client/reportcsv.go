package client

import (
	"encoding/csv"
	"io"
	"strconv"
	"time"
)

// WriteCSV writes the report as CSV, one row per certificate listed, with
// its group's figures on every row, for a spreadsheet: what `mica report
// expiring --output csv` prints and the web console downloads.
func (rep *ExpiringReport) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"profile", "owner", "group_count", "group_earliest_expiry", "serial", "identity", "not_after", "fingerprint_sha256"})
	for _, g := range rep.Groups {
		for _, c := range g.Certificates {
			cw.Write([]string{g.Profile, g.Owner, strconv.Itoa(g.Count), g.EarliestExpiry.UTC().Format(time.RFC3339),
				c.Serial, c.Identity, c.NotAfter.UTC().Format(time.RFC3339), c.Fingerprint})
		}
	}
	// Discovered certificates have no profile: the column says where they
	// come from and their class.
	if rep.Discovered != nil {
		for _, g := range rep.Discovered.Groups {
			for _, c := range g.Certificates {
				cw.Write([]string{"discovered:" + g.Class, g.Owner, strconv.Itoa(g.Count), g.EarliestExpiry.UTC().Format(time.RFC3339),
					c.Serial, c.Identity, c.NotAfter.UTC().Format(time.RFC3339), c.Fingerprint})
			}
		}
	}
	cw.Flush()
	return cw.Error()
}
