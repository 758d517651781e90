package web

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

func TestNiceCeil(t *testing.T) {
	for _, c := range []struct{ n, want int64 }{
		{0, 4}, {3, 4}, {5, 8}, {7, 8}, {9, 12}, {11, 12}, {37, 40}, {41, 48}, {51, 60}, {99, 100}, {503, 600}, {801, 1000}, {1_000_001, 1_200_000},
	} {
		if got := niceCeil(c.n); got != c.want || got%4 != 0 {
			t.Errorf("niceCeil(%d) = %d, want %d", c.n, got, c.want)
		}
	}
}

// The timeline stacks each day's profiles, largest profile first, with
// heights in proportion; profiles past the seventh are drawn together;
// the table says the same figures.
func TestBuildTimeline(t *testing.T) {
	from := time.Date(2031, 5, 6, 0, 0, 0, 0, time.UTC)
	var counts []store.DayCount
	for i := range 9 { // profiles p-0 (largest) to p-8
		counts = append(counts, store.DayCount{Day: 2, Profile: fmt.Sprintf("p-%d", i), Count: int64(90 - 10*i)})
	}
	counts = append(counts, store.DayCount{Day: 89, Profile: "p-0", Count: 5}, store.DayCount{Day: 90, Profile: "p-0", Count: 1000})
	v := buildTimeline(counts, from, 90)
	if len(v.Bars) != 90 || v.Total != 450+5 {
		t.Fatalf("%d bars, total %d; want 90 and 455 (day 90 is outside)", len(v.Bars), v.Total)
	}
	if len(v.Profiles) != maxColours+1 || v.Profiles[0].Name != "p-0" || v.Profiles[maxColours].Name != "other profiles" ||
		v.Profiles[maxColours].Total != 20+10 {
		t.Fatalf("legend %+v", v.Profiles)
	}
	day := v.Bars[2]
	if day.Total != 450 || len(day.Segments) != maxColours+1 || !day.Date.Equal(from.AddDate(0, 0, 2)) {
		t.Fatalf("day 2: %+v", day)
	}
	if v.Top != 480 || v.Peak.Day != 2 {
		t.Errorf("top %d, peak day %d", v.Top, v.Peak.Day)
	}
	// Heights add up to the bar's share of the plot; segments stack up.
	var h float64
	for i, s := range day.Segments {
		h += s.H
		if i > 0 && math.Abs(s.Y+s.H-day.Segments[i-1].Y) > 1e-9 {
			t.Errorf("segment %d is not on top of the one below", i)
		}
	}
	if want := 450.0 / 480 * plotH; math.Abs(h-want) > 1e-9 {
		t.Errorf("day 2 is %.2f high, want %.2f", h, want)
	}
	if len(v.Table) != 2 || v.Table[0].Total != 450 || v.Table[1].Counts[0] != 5 {
		t.Errorf("table %+v", v.Table)
	}
	if len(v.XTicks) != 13 || len(v.YTicks) != 5 || v.YTicks[4].Label != "480" {
		t.Errorf("ticks %+v %+v", v.XTicks, v.YTicks)
	}
}

// Rates are differences over the window between samples ten seconds or
// more apart; a counter that went down (a restart) counts from zero.
func TestRates(t *testing.T) {
	var rs rateSampler
	t0 := time.Date(2031, 5, 6, 0, 0, 0, 0, time.UTC)
	at := func(s int, issued, refused float64) {
		rs.add(t0.Add(time.Duration(s)*time.Second), issuance{issued: issued, refused: refused, reasons: map[string]float64{"ttl-too-long": refused}})
	}
	at(0, 100, 10)
	if r := rs.over(t0, 5*time.Minute); r.Known {
		t.Errorf("a rate from one sample: %+v", r)
	}
	at(3, 110, 10) // too close: refreshes the newest
	at(6, 120, 10)
	if len(rs.samples) != 2 {
		t.Errorf("%d samples after three within 10s, want 2", len(rs.samples))
	}
	at(60, 160, 16)
	r := rs.over(t0.Add(time.Minute), 5*time.Minute)
	if !r.Known || r.IssuedN != 60 || r.Issued != 60 || r.RefusedN != 6 || len(r.Reasons) != 1 || r.Reasons[0].Count != 6 {
		t.Errorf("rates %+v", r)
	}
	at(120, 30, 1) // restarted
	if r := rs.over(t0.Add(2*time.Minute), 5*time.Minute); r.IssuedN != 30 {
		t.Errorf("after a restart %v issued, want 30", r.IssuedN)
	}
	at(20*60, 40, 1)
	if len(rs.samples) > 3 {
		t.Errorf("%d samples kept after 20 minutes, want the last 15 minutes' only", len(rs.samples))
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/ui/certificates?q=x": "/ui/certificates?q=x",
		"/ui/":                 "/ui/",
		"https://evil.example": "",
		"//evil.example/ui/":   "",
		"/ui//evil.example":    "",
		"/ui/signin?link=x":    "",
		"/v1/tokens":           "",
		"/ui/\\evil":           "",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}
