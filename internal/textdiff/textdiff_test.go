package textdiff

import (
	"strings"
	"testing"
)

func TestLines(t *testing.T) {
	a := "a\nb\nc\nd\ne\nf\ng\nh\n"
	b := "a\nb\nc\nD\ne\nf\ng\nh\ni\n"
	got := Lines(a, b)
	for _, want := range []string{"- d\n", "+ D\n", "+ i\n", "  c\n", "  e\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("diff lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "  a\n") {
		t.Errorf("diff shows lines far from any change:\n%s", got)
	}
	if Lines(a, a) != "" {
		t.Error("equal texts differ")
	}
	if got := Lines("", "x\n"); got != "+ x\n" {
		t.Errorf("from nothing: %q", got)
	}
}
