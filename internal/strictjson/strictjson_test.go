package strictjson

import (
	"errors"
	"strings"
	"testing"
)

func TestUnmarshal(t *testing.T) {
	type req struct {
		CSR  string            `json:"csr"`
		TTL  string            `json:"ttl"`
		Tags map[string]string `json:"tags"`
	}
	tests := []struct {
		in, wantErr string
		dup         bool
	}{
		{in: `{"csr":"a","ttl":"1h"}`},
		{in: `{"csr":"a","csr":"b"}`, dup: true},
		{in: `{"csr":"a","CSR":"b"}`, dup: true},
		{in: `{"csr":"a","c\u0073r":"b"}`, dup: true},
		{in: `{"tags":{"x":"1","x":"2"}}`, dup: true},
		{in: `{"csr":"a","extra":1}`, wantErr: "unknown field"},
		{in: `{"csr":"a"} {}`, wantErr: "trailing data"},
		{in: `{"csr":`, wantErr: "EOF"},
		{in: strings.Repeat("[", 100) + strings.Repeat("]", 100), wantErr: "nested deeper"},
	}
	for _, tt := range tests {
		var r req
		err := Unmarshal([]byte(tt.in), &r)
		switch {
		case tt.dup:
			if !errors.Is(err, ErrDuplicateKey) {
				t.Errorf("%s: err = %v, want a duplicate key", tt.in, err)
			}
		case tt.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: err = %v, want %q", tt.in, err, tt.wantErr)
			}
		case err != nil:
			t.Errorf("%s: %v", tt.in, err)
		}
	}
}

func FuzzCheckDuplicates(f *testing.F) {
	f.Add([]byte(`{"a":1,"b":[{"a":2}]}`))
	f.Add([]byte(`{"a":1,"a":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = CheckDuplicates(data) // must not panic or hang
	})
}
