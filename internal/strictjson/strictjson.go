// Package strictjson is the one way mica reads a JSON request body: one
// value, no unknown field, no trailing data, and no key given twice.
//
// Duplicate keys are refused because parsers disagree on them (the first
// wins here, the last there), which lets a request say one thing to a
// proxy or a log and another to mica. encoding/json matches struct fields
// without regard to case, so keys that differ only in case count as the
// same key too.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode"
)

// ErrDuplicateKey is wrapped by the error for a key given twice.
var ErrDuplicateKey = errors.New("strictjson: duplicate key")

// Unmarshal decodes data into v strictly (see the package comment).
func Unmarshal(data []byte, v any) error {
	if err := CheckDuplicates(data); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

// maxDepth bounds nesting, so a hostile body cannot make the check recurse
// without end (encoding/json has its own, larger bound).
const maxDepth = 64

// CheckDuplicates reports the first object key given twice, at any depth.
func CheckDuplicates(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := walk(dec, 0); err != nil {
		return err
	}
	return nil
}

// Check accepts exactly one JSON value with no key given twice, for data
// that is decoded later, or by another library (a JWS's protected header
// is read by the JWS library too).
func Check(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := walk(dec, 0); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("strictjson: trailing data after the JSON value")
	}
	return nil
}

// walk reads one value from dec, checking objects for repeated keys.
func walk(dec *json.Decoder, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("strictjson: nested deeper than %d levels", maxDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return err
			}
			key := foldKey(k.(string))
			if seen[key] {
				return fmt.Errorf("%w %q: give each field once", ErrDuplicateKey, k)
			}
			seen[key] = true
			if err := walk(dec, depth+1); err != nil {
				return err
			}
		}
		_, err = dec.Token() // '}'
		return err
	case json.Delim('['):
		for dec.More() {
			if err := walk(dec, depth+1); err != nil {
				return err
			}
		}
		_, err = dec.Token() // ']'
		return err
	}
	return nil
}

// foldKey maps every rune to the smallest rune of its Unicode simple case
// folding orbit, so that keys encoding/json would match to one field (k,
// K and the Kelvin sign; s, S and ſ) fold to one string.
func foldKey(s string) string {
	out := []rune(s)
	for i, r := range out {
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			out[i] = min(out[i], f)
		}
	}
	return string(out)
}
