package strictyaml

import (
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	type conf struct {
		Name string `yaml:"name"`
	}
	tests := []struct {
		in, wantErr string
	}{
		{in: "name: a\n"},
		{in: "", wantErr: "empty"},
		{in: "nmae: a\n", wantErr: "check the field's spelling"},
		{in: "name: a\n---\nname: b\n", wantErr: "more than one YAML document"},
	}
	for _, tt := range tests {
		var c conf
		err := Decode([]byte(tt.in), &c)
		if tt.wantErr == "" {
			if err != nil || c.Name != "a" {
				t.Errorf("Decode(%q) = %+v, %v", tt.in, c, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("Decode(%q) error = %v, want %q", tt.in, err, tt.wantErr)
		}
		if err != nil && strings.Contains(err.Error(), "in type") {
			t.Errorf("Decode(%q) error names a Go type: %v", tt.in, err)
		}
	}
}
