package acme

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode"
)

// maxJSONDepth bounds nesting in a request; no ACME object nests deeper
// than a JWS inside a JWS with a JWK in its header.
const maxJSONDepth = 16

// checkJSON accepts exactly one JSON value in which no object has two
// members of one name. encoding/json would take the last of them, and
// another parser the first, so that a signer and a verifier could read two
// different requests in one JWS. Names that differ only in case count as
// one name, because encoding/json matches struct fields that way.
func checkJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := walkJSON(dec, 0); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("there is more after the JSON value")
	}
	return nil
}

func walkJSON(dec *json.Decoder, depth int) error {
	if depth > maxJSONDepth {
		return fmt.Errorf("it nests deeper than %d levels", maxJSONDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	switch delim {
	case '{':
		seen := map[string]string{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			name := tok.(string) // the decoder allows only strings here
			if prev, dup := seen[foldName(name)]; dup {
				if prev == name {
					return fmt.Errorf("member %q appears twice in one object", name)
				}
				return fmt.Errorf("members %q and %q differ only in case", prev, name)
			}
			seen[foldName(name)] = name
			if err := walkJSON(dec, depth+1); err != nil {
				return err
			}
		}
	case '[':
		for dec.More() {
			if err := walkJSON(dec, depth+1); err != nil {
				return err
			}
		}
	}
	_, err = dec.Token() // the closing delimiter
	return err
}

// foldName maps every rune to the smallest rune of its Unicode simple case
// folding orbit, so that names encoding/json would match (K, k and the
// Kelvin sign, say) map to one string.
func foldName(s string) string {
	out := []rune(s)
	for i, r := range out {
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			out[i] = min(out[i], f)
		}
	}
	return string(out)
}
