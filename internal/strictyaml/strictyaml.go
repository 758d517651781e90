// Package strictyaml is the one way mica reads a YAML file it owns
// (mica.yaml, the agent's and the proxy's config, policy test files): one
// document, no unknown field, and errors that say how to fix them.
package strictyaml

import (
	"bytes"
	"errors"
	"io"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Decode reads exactly one YAML document from data into v, refusing unknown
// fields (a misspelt field must fail, not silently mean its default), empty
// input and further documents.
func Decode(data []byte, v any) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return errors.New("the document is empty")
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		return explain(err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return errors.New("more than one YAML document: keep only one (remove the extra ---)")
	}
	return nil
}

// goType matches the Go type names yaml puts in its messages ("in type
// policy.ProfileConfig"); an operator knows the file by line numbers, not
// by Go types.
var goType = regexp.MustCompile(` in type [\w.\[\]*]+`)

// explain rewrites a yaml error for the person editing the file and adds
// the likely fix.
func explain(err error) error {
	msg := goType.ReplaceAllString(err.Error(), "")
	msg = strings.ReplaceAll(msg, "yaml: unmarshal errors:\n  ", "")
	var hints []string
	if strings.Contains(msg, "not found") {
		hints = append(hints, "check the field's spelling against the documented format")
	}
	if (strings.Contains(msg, "time.Duration") || strings.Contains(msg, "duration")) && !strings.Contains(msg, "write durations") {
		hints = append(hints, "write durations with a unit, like 24h, 90m or 7d")
	}
	if len(hints) > 0 {
		msg += "\n  to fix: " + strings.Join(hints, "; ")
	}
	return errors.New(msg)
}
