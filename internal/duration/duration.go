// Package duration is the one duration grammar mica reads everywhere: in
// mica.yaml and the other config files, in flags and in the API. It is Go's
// (300ms, 90m, 24h) plus whole days, alone or in front ("7d", "1d12h"),
// because certificate lifetimes and expiry windows are talked about in days.
package duration

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// maxDays bounds the day count so that it cannot overflow time.Duration
// (about 106,751 days).
const maxDays = 100000

// Parse reads a duration such as 90s, 1h30m, 7d or 1d12h.
func Parse(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("duration: empty: write one like 1h, 90m or 7d")
	}
	neg := strings.HasPrefix(s, "-")
	rest := strings.TrimPrefix(s, "-")
	var total time.Duration
	if days, after, ok := strings.Cut(rest, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > maxDays || days == "" || days[0] == '+' {
			return 0, fmt.Errorf("duration: %q: days must be a whole number up to %d, like 7d or 1d12h", s, maxDays)
		}
		total = time.Duration(n) * 24 * time.Hour
		rest = after
		if rest == "" {
			if neg {
				total = -total
			}
			return total, nil
		}
	}
	d, err := time.ParseDuration(rest)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("duration: %q is not a duration: write one like 1h, 90m, 7d or 1d12h", s)
	}
	total += d
	if neg {
		total = -total
	}
	return total, nil
}

// Format writes d the way an operator would: whole days past the first as
// "7d", and "24h", "90m" rather than "24h0m0s".
func Format(d time.Duration) string {
	if d > 24*time.Hour && d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// Duration is a time.Duration that config files, flags and JSON write in
// this package's grammar.
type Duration time.Duration

// D is the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats d with Format.
func (d Duration) String() string { return Format(time.Duration(d)) }

// Set implements flag.Value.
func (d *Duration) Set(s string) error {
	v, err := Parse(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// UnmarshalText implements encoding.TextUnmarshaler (JSON strings, env).
func (d *Duration) UnmarshalText(b []byte) error { return d.Set(string(b)) }

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalYAML reads a scalar; a bare number is refused because it would
// silently mean nanoseconds.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a duration must be one value like 24h or 7d", n.Line)
	}
	if _, err := strconv.ParseFloat(n.Value, 64); err == nil && n.Value != "0" {
		return fmt.Errorf("line %d: duration %q has no unit (write durations with a unit, like 24h, 90m or 7d)", n.Line, n.Value)
	}
	if n.Value == "0" {
		*d = 0
		return nil
	}
	if err := d.Set(n.Value); err != nil {
		return fmt.Errorf("line %d: %v", n.Line, err)
	}
	return nil
}

// MarshalYAML writes d in this package's grammar.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }
