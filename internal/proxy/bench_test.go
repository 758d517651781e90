package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkInboundRequest is one keep-alive GET through an inbound
// listener to a plain-HTTP backend: the proxy's cost per request, with the
// client and the backend in the same process.
func BenchmarkInboundRequest(b *testing.B) {
	w := newWorld(b)
	backend := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) { rw.Write([]byte("ok")) }))
	defer backend.Close()
	p, _ := w.proxy("/proxy", inbound("in", backend.URL, &Rule{TrustDomains: []string{"example.org"}}))
	c := w.client("/billing/worker", false)
	url := "https://" + addrOf(p, "in") + "/x"
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
