package duration

import (
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{in: "90s", want: 90 * time.Second},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "7d", want: 7 * 24 * time.Hour},
		{in: "1d12h", want: 36 * time.Hour},
		{in: "0d", want: 0},
		{in: "-1d", want: -24 * time.Hour},
		{in: "", bad: true},
		{in: "d", bad: true},
		{in: "+1d", bad: true},
		{in: "1.5d", bad: true},
		{in: "100001d", bad: true},
		{in: "7", bad: true},
		{in: "1d-1h", bad: true},
		{in: "1dd", bad: true},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if tt.bad {
			if err == nil {
				t.Errorf("Parse(%q) = %v, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Parse(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestFormatRoundTrips(t *testing.T) {
	for _, d := range []time.Duration{time.Second, 90 * time.Minute, 24 * time.Hour, 30 * 24 * time.Hour, 36 * time.Hour, 1500 * time.Millisecond} {
		back, err := Parse(Format(d))
		if err != nil || back != d {
			t.Errorf("Format(%v) = %q, parses back as %v, %v", d, Format(d), back, err)
		}
	}
}

func TestYAML(t *testing.T) {
	var v struct {
		MaxTTL Duration `yaml:"max_ttl"`
	}
	if err := yaml.Unmarshal([]byte("max_ttl: 7d\n"), &v); err != nil || v.MaxTTL.D() != 7*24*time.Hour {
		t.Fatalf("7d: %v, %v", v.MaxTTL, err)
	}
	if err := yaml.Unmarshal([]byte("max_ttl: 3600\n"), &v); err == nil {
		t.Fatal("a bare number was accepted as a duration")
	}
	out, err := yaml.Marshal(v)
	if err != nil || string(out) != "max_ttl: 7d\n" {
		t.Fatalf("marshal: %q, %v", out, err)
	}
}
