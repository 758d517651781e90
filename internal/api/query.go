package api

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// query reads a request's query parameters and collects every problem with
// them, so that a request with two bad parameters gets one problem document
// naming both.
type query struct {
	v    url.Values
	errs []string
}

func newQuery(r *http.Request) *query { return &query{v: r.URL.Query()} }

// int reads a whole number in [lo, hi]; absent is 0.
func (q *query) int(name string, lo, hi int64) int64 {
	v := q.v.Get(name)
	if v == "" {
		return 0
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		q.errs = append(q.errs, fmt.Sprintf("%s %q must be a whole number from %d to %d", name, v, lo, hi))
		return 0
	}
	return n
}

// fail reports the problems found: it answers the request and returns true
// when there are any.
func (q *query) fail(w http.ResponseWriter) bool {
	if len(q.errs) == 0 {
		return false
	}
	writeProblem(w, http.StatusBadRequest, "invalid-request", "Invalid Request", strings.Join(q.errs, "; "))
	return true
}
