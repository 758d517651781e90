package sqlstore

import (
	"strings"
	"testing"

	"github.com/mica-pki/mica/internal/store"
)

// A list may ask for one row more than the largest page, which is how the
// API knows whether a page of 10,000 has a next; beyond that it is capped.
func TestListLimit(t *testing.T) {
	d := Dialect{Placeholder: func(int) string { return "?" }}
	for _, tt := range []struct {
		limit int
		want  string
	}{
		{0, " LIMIT 1000 "},
		{7, " LIMIT 7 "},
		{maxLimit, " LIMIT 10000 "},
		{maxLimit + 1, " LIMIT 10001 "},
		{maxLimit + 2, " LIMIT 10000 "},
		{1 << 30, " LIMIT 10000 "},
	} {
		q, err := listCertificates(store.Filter{Limit: tt.limit}, &d)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(q.SQL, tt.want) {
			t.Errorf("Limit %d: %s, want%s", tt.limit, q.SQL, tt.want)
		}
	}
}
