package strictjson

import (
	"bytes"
	"encoding/json"
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
		{in: `{"tags":{"k":"1","\u212a":"2"}}`, dup: true}, // the Kelvin sign folds to k
		{in: `{"tags":{"s":"1","\u017f":"2"}}`, dup: true}, // so does the long s to s
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

func TestCheck(t *testing.T) {
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"object", `{"a":1,"b":[1,{"c":2}]}`, true},
		{"same key in sibling objects", `[{"a":1},{"a":2}]`, true},
		{"same key at two depths", `{"a":{"a":1}}`, true},
		{"scalar", `"x"`, true},
		{"empty", ``, false},
		{"duplicate deep", `{"x":[{"a":1,"b":2,"a":3}]}`, false},
		{"two values", `{} {}`, false},
		{"trailing garbage", `{}x`, false},
		{"not JSON", `{a:1}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Check([]byte(tt.in)); (err == nil) != tt.ok {
				t.Errorf("Check(%s) = %v, want ok=%v", tt.in, err, tt.ok)
			}
		})
	}
}

// FuzzCheck: whatever Check accepts is one valid JSON value that
// encoding/json decodes without dropping a key (a duplicate would be
// dropped: the map keeps one).
func FuzzCheck(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"a":1,"A":2}`, `[{"a":{"b":[1,2]}}]`, `"x"`, `{"a":1,"a":2}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if Check(data) != nil {
			return
		}
		var v any
		if err := json.Unmarshal(data, &v); err != nil {
			t.Fatalf("accepted %q, which encoding/json refuses: %v", data, err)
		}
		if got, want := countMembers(v), countKeys(data); got != want {
			t.Fatalf("decoded %d keys from %q, which gives %d", got, data, want)
		}
	})
}

// countKeys counts the object keys in the token stream, duplicates included.
func countKeys(data []byte) int {
	type frame struct{ object, expectKey bool }
	dec := json.NewDecoder(bytes.NewReader(data))
	var stack []*frame
	n := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return n
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		d, isDelim := tok.(json.Delim)
		switch {
		case isDelim && (d == '}' || d == ']'):
			stack = stack[:len(stack)-1]
		case top != nil && top.object && top.expectKey:
			n++
			top.expectKey = false
		default: // a value
			if top != nil && top.object {
				top.expectKey = true
			}
			if isDelim {
				stack = append(stack, &frame{object: d == '{', expectKey: d == '{'})
			}
		}
	}
}

func countMembers(v any) int {
	n := 0
	switch x := v.(type) {
	case map[string]any:
		n += len(x)
		for _, e := range x {
			n += countMembers(e)
		}
	case []any:
		for _, e := range x {
			n += countMembers(e)
		}
	}
	return n
}
