package bytesize

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		bad  bool
	}{
		{in: "0B", want: 0},
		{in: "100B", want: 100},
		{in: "64KiB", want: 64 << 10},
		{in: "32MiB", want: 32 << 20},
		{in: "32 MiB", want: 32 << 20},
		{in: "2GiB", want: 2 << 30},
		{in: "1TiB", want: 1 << 40},
		{in: "8388607TiB", want: 8388607 << 40},
		{in: "8388608TiB", bad: true}, // 2^63
		{in: "99999999999999999999B", bad: true},
		{in: "", bad: true},
		{in: "32", bad: true},
		{in: "MiB", bad: true},
		{in: "-1MiB", bad: true},
		{in: "+1MiB", bad: true},
		{in: "1.5GiB", bad: true},
		{in: "32MB", bad: true},
		{in: "32mib", bad: true},
		{in: "32M", bad: true},
		{in: "32  MiB", bad: true},
		{in: "32MiB ", bad: true},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if tt.bad {
			if err == nil {
				t.Errorf("Parse(%q) = %d, want an error", tt.in, got)
			} else if !strings.HasPrefix(err.Error(), "bytesize: ") || !strings.Contains(err.Error(), "e.g. 32MiB") {
				t.Errorf("Parse(%q): %q does not say how to write a size", tt.in, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Parse(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestFormatRoundTrips(t *testing.T) {
	for _, n := range []int64{0, 1, 1023, 1024, 1536 << 10, 32 << 20, 3 << 30, 5 << 40, 1<<63 - 1} {
		back, err := Parse(Format(n))
		if err != nil || back != n {
			t.Errorf("Format(%d) = %q, parses back as %d, %v", n, Format(n), back, err)
		}
	}
	if got := Format(32 << 20); got != "32MiB" {
		t.Errorf("Format(32 MiB) = %q, want 32MiB", got)
	}
}

func TestYAML(t *testing.T) {
	var v struct {
		CacheSize Size `yaml:"cache_size"`
	}
	if err := yaml.Unmarshal([]byte("cache_size: 32MiB\n"), &v); err != nil || v.CacheSize.Bytes() != 32<<20 {
		t.Fatalf("32MiB: %v, %v", v.CacheSize, err)
	}
	for _, bad := range []string{"cache_size: 33554432\n", "cache_size: 32MB\n", "cache_size: [1, 2]\n"} {
		if err := yaml.Unmarshal([]byte(bad), &v); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("%q: %v, want an error naming its line", bad, err)
		}
	}
	out, err := yaml.Marshal(v)
	if err != nil || string(out) != "cache_size: 32MiB\n" {
		t.Fatalf("marshal: %q, %v", out, err)
	}
}
