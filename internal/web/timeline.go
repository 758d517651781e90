package web

import (
	"context"
	"math"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/store"
)

// The expiry timeline: live certificates expiring on each of the next 90
// days, stacked by profile, drawn as an SVG on the server from one
// aggregate query (store.ExpiryTimeline), never from the rows. The query
// is kept for timelineTTL per server, like the inventory gauges: the
// question "may this session read it" is still asked on every request.

const (
	timelineDays = 90
	timelineTTL  = 30 * time.Second
	// maxColours is how many profiles get a colour of their own; the rest
	// are drawn together as "other profiles".
	maxColours = 7
)

type timelineCache struct {
	mu     sync.Mutex
	at     time.Time
	from   time.Time
	counts []store.DayCount
}

func (c *Console) timelineCounts(ctx context.Context, p authority.Principal) ([]store.DayCount, time.Time, error) {
	if err := c.cfg.Authority.Authorize(p, authority.ActReportRead, authority.Resource{}); err != nil {
		return nil, time.Time{}, err
	}
	now := c.now()
	tc := &c.timeline
	tc.mu.Lock()
	if !tc.at.IsZero() && now.Sub(tc.at) < timelineTTL && tc.from.Equal(now.UTC().Truncate(24*time.Hour)) {
		counts, from := tc.counts, tc.from
		tc.mu.Unlock()
		return counts, from, nil
	}
	tc.mu.Unlock()
	counts, from, err := c.cfg.Authority.ExpiryTimeline(ctx, p, timelineDays)
	if err != nil {
		return nil, from, err
	}
	tc.mu.Lock()
	tc.at, tc.from, tc.counts = now, from, counts
	tc.mu.Unlock()
	return counts, from, nil
}

// The chart's geometry, in SVG user units.
const (
	chartW, chartH   = 960.0, 300.0
	padLeft, padTop  = 56.0, 12.0
	padRight, padBot = 8.0, 30.0
	plotW            = chartW - padLeft - padRight
	plotH            = chartH - padTop - padBot
)

type timelineView struct {
	Problem  string
	From     time.Time
	Days     int
	Total    int64
	Top      int64 // the y-axis maximum
	Peak     bar
	Profiles []legendEntry
	Bars     []bar
	YTicks   []tick
	XTicks   []tick
	W, H     float64
	Left     float64
	Bottom   float64
	PlotW    float64
	Table    []tableRow // the same figures as a table, for reading
}

type legendEntry struct {
	Name, Class string
	Total       int64
}

type bar struct {
	Day      int
	Date     time.Time
	X, W     float64
	Total    int64
	Segments []segment
}

type segment struct {
	Profile, Class string
	Count          int64
	Y, H           float64
}

type tick struct {
	Pos   float64
	Label string
}

type tableRow struct {
	Date   time.Time
	Counts []int64 // by Profiles
	Total  int64
}

func (c *Console) timelinePage(w http.ResponseWriter, r *http.Request, s *session) {
	counts, from, err := c.timelineCounts(r.Context(), s.Principal)
	var v timelineView
	if err != nil {
		if authority.KindOf(err) == authority.KindInternal {
			c.refuse(w, r, s, err)
			return
		}
		v.Problem = detail(err)
	} else {
		v = buildTimeline(counts, from, timelineDays)
	}
	c.render(w, r, s, http.StatusOK, "timeline", "Expiry timeline", "timeline", v)
}

// buildTimeline lays out the stacked bars: profiles by total, the largest
// first and at the bottom of each bar.
func buildTimeline(counts []store.DayCount, from time.Time, days int) timelineView {
	v := timelineView{From: from, Days: days, W: chartW, H: chartH, Left: padLeft, Bottom: padTop + plotH, PlotW: plotW}
	byProfile := map[string]int64{}
	perDay := make([]map[string]int64, days)
	for _, dc := range counts {
		if dc.Day < 0 || dc.Day >= days {
			continue
		}
		if perDay[dc.Day] == nil {
			perDay[dc.Day] = map[string]int64{}
		}
		perDay[dc.Day][dc.Profile] += dc.Count
		byProfile[dc.Profile] += dc.Count
		v.Total += dc.Count
	}
	names := make([]string, 0, len(byProfile))
	for p := range byProfile {
		names = append(names, p)
	}
	sort.Slice(names, func(i, j int) bool {
		if byProfile[names[i]] != byProfile[names[j]] {
			return byProfile[names[i]] > byProfile[names[j]]
		}
		return names[i] < names[j]
	})
	class := map[string]string{}
	for i, p := range names {
		if i < maxColours {
			class[p] = "p" + string(rune('0'+i))
			v.Profiles = append(v.Profiles, legendEntry{Name: p, Class: class[p], Total: byProfile[p]})
			continue
		}
		class[p] = "p" + string(rune('0'+maxColours))
		if len(v.Profiles) == maxColours {
			v.Profiles = append(v.Profiles, legendEntry{Name: "other profiles", Class: class[p]})
		}
		v.Profiles[maxColours].Total += byProfile[p]
	}
	var peak int64
	for d := range perDay {
		var t int64
		for _, n := range perDay[d] {
			t += n
		}
		peak = max(peak, t)
	}
	v.Top = niceCeil(peak)
	slot := plotW / float64(days)
	for d := range days {
		b := bar{Day: d, Date: from.AddDate(0, 0, d), X: padLeft + float64(d)*slot + 1, W: max(slot-2, 1)}
		row := tableRow{Date: b.Date, Counts: make([]int64, len(v.Profiles))}
		y := padTop + plotH
		for i, e := range v.Profiles {
			var n int64
			if e.Class == "p"+string(rune('0'+maxColours)) {
				for p, k := range perDay[d] {
					if class[p] == e.Class {
						n += k
					}
				}
			} else {
				n = perDay[d][e.Name]
			}
			row.Counts[i] = n
			if n == 0 {
				continue
			}
			h := float64(n) / float64(v.Top) * plotH
			y -= h
			b.Segments = append(b.Segments, segment{Profile: e.Name, Class: e.Class, Count: n, Y: y, H: h})
			b.Total += n
		}
		row.Total = b.Total
		if b.Total > v.Peak.Total {
			v.Peak = b
		}
		v.Bars = append(v.Bars, b)
		if b.Total > 0 {
			v.Table = append(v.Table, row)
		}
	}
	for i := 0; i <= 4; i++ {
		val := v.Top * int64(i) / 4
		v.YTicks = append(v.YTicks, tick{Pos: padTop + plotH - float64(i)/4*plotH, Label: group(val)})
	}
	for d := 0; d < days; d += 7 {
		v.XTicks = append(v.XTicks, tick{Pos: padLeft + (float64(d)+0.5)*slot, Label: from.AddDate(0, 0, d).Format("2 Jan")})
	}
	return v
}

// niceCeil rounds n up to a round number divisible by 4, so that the
// axis's four steps are whole and round: 1, 1.2, 1.6, 2, 2.4, 3.2, 4, 4.8, 6
// or 8 times a power of ten, or else the next multiple of 4.
func niceCeil(n int64) int64 {
	if n <= 4 {
		return 4
	}
	p := int64(math.Pow(10, math.Floor(math.Log10(float64(n)))))
	for _, tenths := range []int64{10, 12, 16, 20, 24, 32, 40, 48, 60, 80, 100} {
		if tenths*p%10 != 0 {
			continue
		}
		if v := tenths * p / 10; v >= n && v%4 == 0 {
			return v
		}
	}
	return (n + 3) / 4 * 4
}
