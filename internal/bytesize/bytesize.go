// Package bytesize is the one grammar mica reads amounts of memory in, in
// mica.yaml and flags: a whole number and a binary unit, "512KiB", "32MiB",
// "2GiB". Decimal units (MB, GB) are refused rather than guessed at, so
// that a size means the same to the operator and to the server. Start at
// Parse and Size.
package bytesize

import (
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// units, largest first, for Format.
var units = []struct {
	name  string
	shift uint
}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}}

// hint is what every refusal suggests.
const hint = "write a whole number and a binary unit: B, KiB, MiB, GiB or TiB (e.g. 32MiB)"

// Parse reads a size such as 64KiB, 32MiB or 2GiB; a space may separate
// the number from its unit.
func Parse(s string) (int64, error) {
	i := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	switch {
	case i < 0 && s != "":
		return 0, fmt.Errorf("bytesize: %q has no unit: %s", s, hint)
	case i <= 0:
		return 0, fmt.Errorf("bytesize: %q: %s", s, hint)
	}
	digits, unit := s[:i], strings.TrimPrefix(s[i:], " ")
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bytesize: %q is too large: %s", s, hint)
	}
	for _, u := range units {
		if unit != u.name {
			continue
		}
		if n > (1<<63-1)>>u.shift {
			return 0, fmt.Errorf("bytesize: %q is too large: %s", s, hint)
		}
		return n << u.shift, nil
	}
	return 0, fmt.Errorf("bytesize: %q has no unit mica reads: %s", s, hint)
}

// Format writes n in the largest unit that holds it whole: "32MiB",
// "1536KiB", "100B".
func Format(n int64) string {
	for _, u := range units {
		if n != 0 && n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// Size is a number of bytes that config files and flags write in this
// package's grammar.
type Size int64

// Bytes is the size as a number of bytes.
func (s Size) Bytes() int64 { return int64(s) }

// String formats s with Format.
func (s Size) String() string { return Format(int64(s)) }

// Set implements flag.Value.
func (s *Size) Set(v string) error {
	n, err := Parse(v)
	if err != nil {
		return err
	}
	*s = Size(n)
	return nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Size) UnmarshalText(b []byte) error { return s.Set(string(b)) }

// MarshalText implements encoding.TextMarshaler.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalYAML reads a scalar such as 32MiB; a bare number is refused
// because bytes, KiB and MiB are all plausible readings of it.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a size must be one value like 32MiB", n.Line)
	}
	if err := s.Set(n.Value); err != nil {
		return fmt.Errorf("line %d: %v", n.Line, err)
	}
	return nil
}

// MarshalYAML writes s in this package's grammar.
func (s Size) MarshalYAML() (any, error) { return s.String(), nil }
