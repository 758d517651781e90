package acme

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestCheckJSON(t *testing.T) {
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"object", `{"a":1,"b":[1,{"c":2}]}`, true},
		{"same name in sibling objects", `[{"a":1},{"a":2}]`, true},
		{"same name at two depths", `{"a":{"a":1}}`, true},
		{"empty", ``, false},
		{"duplicate", `{"a":1,"a":1}`, false},
		{"duplicate deep", `{"x":[{"a":1,"b":2,"a":3}]}`, false},
		{"case variants", `{"url":"a","URL":"b"}`, false},
		{"Kelvin sign and k", `{"k":1,"\u212a":2}`, false},
		{"long s and S", `{"s":1,"\u017f":2}`, false},
		{"escaped duplicate", `{"a":1,"\u0061":2}`, false},
		{"two values", `{} {}`, false},
		{"trailing garbage", `{}x`, false},
		{"not JSON", `{a:1}`, false},
		{"nested to the limit", strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1), true},
		{"nested past the limit", strings.Repeat("[", maxJSONDepth+2) + strings.Repeat("]", maxJSONDepth+2), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := checkJSON([]byte(tt.in)); (err == nil) != tt.ok {
				t.Errorf("checkJSON(%s) = %v, want ok=%v", tt.in, err, tt.ok)
			}
		})
	}
}

// FuzzCheckJSON: whatever checkJSON accepts is one valid JSON value whose
// objects encoding/json decodes without losing a member.
func FuzzCheckJSON(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"a":1,"A":2}`, `[{"a":{"b":[1,2]}}]`, `"x"`, `{"a":1,"a":2}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if checkJSON(data) != nil {
			return
		}
		if !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		var v any
		if err := json.Unmarshal(data, &v); err != nil {
			t.Fatalf("accepted %q, which encoding/json refuses: %v", data, err)
		}
		if got, want := countMembers(v), countNames(data); got != want {
			t.Fatalf("decoded %d members from %q, which names %d", got, data, want)
		}
	})
}

// countNames counts the member names in the token stream, duplicates
// included.
func countNames(data []byte) int {
	type frame struct{ object, expectName bool }
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
		case top != nil && top.object && top.expectName:
			n++
			top.expectName = false
		default: // a value
			if top != nil && top.object {
				top.expectName = true
			}
			if isDelim {
				stack = append(stack, &frame{object: d == '{', expectName: d == '{'})
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
