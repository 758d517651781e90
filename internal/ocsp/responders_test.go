package ocsp

import (
	"bytes"
	"context"
	"testing"

	xocsp "golang.org/x/crypto/ocsp"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/testpki"
)

// TestResponders: with two issuing CAs in the bundle (a rotation's active
// and retired intermediates), each request is answered by its own
// issuer's responder, and a CA taken out of the set is no longer answered
// for.
func TestResponders(t *testing.T) {
	a, b := testpki.New(t, "example.org"), testpki.New(t, "example.org")
	leafA, leafB := a.Leaf(t, a.ID(t, "/a")), b.Leaf(t, b.ID(t, "/b"))
	src := &fakeSource{certs: map[string]store.Certificate{}}
	var rs []*Responder
	for _, p := range []*testpki.PKI{a, b} {
		id := authority.Fingerprint(p.Intermediate.Raw)
		r, err := New(Config{Source: src, Issuer: p.Intermediate, IssuerID: id, Responder: responderFunc(t, p)})
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	src.set(store.Certificate{Serial: authority.SerialHex(leafA.Cert), Issuer: authority.Fingerprint(a.Intermediate.Raw), Status: store.StatusActive})
	src.set(store.Certificate{Serial: authority.SerialHex(leafB.Cert), Issuer: authority.Fingerprint(b.Intermediate.Raw), Status: store.StatusActive})
	m := NewResponders()
	m.Set(rs)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()

	for i, tc := range []struct {
		leaf *testpki.Leaf
		p    *testpki.PKI
	}{{leafA, a}, {leafB, b}} {
		req, _ := xocsp.CreateRequest(tc.leaf.Cert, tc.p.Intermediate, nil)
		resp, err := xocsp.ParseResponseForCert(m.Respond(ctx, req), tc.leaf.Cert, tc.p.Intermediate)
		if err != nil || resp.Status != xocsp.Good || !resp.Certificate.Equal(rs[i].ResponderCertificate()) {
			t.Fatalf("issuer %d: %+v, %v; want good, signed by its own responder", i, resp, err)
		}
	}
	m.Set(rs[:1])
	req, _ := xocsp.CreateRequest(leafB.Cert, b.Intermediate, nil)
	if got := m.Respond(ctx, req); !bytes.Equal(got, errorResponse(statusUnauthorized)) {
		t.Fatalf("a removed issuer's certificate: %x, want unauthorized", got)
	}
	if st := m.CacheStats(); st.Responses != 1 {
		t.Errorf("CacheStats after removing one issuer = %+v, want its one cached response gone", st)
	}
}
