// Package storetest is the conformance suite every store engine passes:
// Run exercises each store.Store method and each promise in package store
// (round trips, token replay, batch isolation, revocation, filters, event
// order, durability across reopen, cancellation and concurrency) against a
// real engine. Engines call Run from their tests and BenchmarkRecordIssuance
// from their benchmarks, with PerTest and Fresh to open their stores.
package storetest

import (
	"testing"

	"github.com/mica-pki/mica/internal/store"
)

// Opener opens a Store on the database that belongs to test t: the first
// call for a given t creates it empty; later calls with the same t open the
// same database again (after the suite has closed the previous Store, or
// alongside it, to act as a second server). The suite closes every Store
// it opens; the engine's cleanup may then remove the database. PerTest
// makes one from the engine's Open.
type Opener func(t *testing.T) store.Store

// Run runs the conformance suite, one subtest per promise.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(*testing.T, Opener)
	}{
		{"RoundTrip", testRoundTrip},
		{"NotFound", testNotFound},
		{"InvalidInput", testInvalidInput},
		{"TokenReplay", testTokenReplay},
		{"BatchIsolation", testBatchIsolation},
		{"Revoke", testRevoke},
		{"Filters", testFilters},
		{"FilterErrors", testFilterErrors},
		{"FilterLimits", testFilterLimits},
		{"Events", testEvents},
		{"EventSeqConcurrent", testEventSeqConcurrent},
		{"TwoStoresShareOneDatabase", testTwoStores},
		{"Durability", testDurability},
		{"CloseDrainsQueue", testCloseDrains},
		{"Cancellation", testCancellation},
		{"ConcurrentIssuance", testConcurrentIssuance},
		{"AuditLeaves", testAuditLeaves},
		{"AuditLeavesTwoStores", testAuditTwoStores},
		{"Checkpoints", testCheckpoints},
		{"RevokeIdentity", testRevokeIdentity},
		{"DenyAllow", testDenyAllow},
		{"RevokedCertificates", testRevokedCertificates},
		{"ACME", testACME},
		{"CertificatesByExpiry", testCertificatesByExpiry},
		{"ExpiringReport", testExpiringReport},
		{"BindCA", testBindCA},
		{"BindCALegacy", testBindCALegacy},
		{"BindCARace", testBindCARace},
		{"CRLNumbers", testCRLNumbers},
		{"CRLNumbersTwoStores", testCRLNumbersTwoStores},
		{"Governance", testGovernance},
		{"CASlots", testCASlots},
		{"Discovery", testDiscovery},
		{"Webhooks", testWebhooks},
		{"Leases", testLeases},
		{"ExpiryNotices", testExpiryNotices},
		{"Console", testConsole},
		{"ExpiryTimeline", testExpiryTimeline},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

// handle is one open Store that the suite closes at the end of the test
// unless the test closed it first.
type handle struct {
	store.Store
	closed bool
}

func openStore(t *testing.T, open Opener) *handle {
	t.Helper()
	h := &handle{Store: open(t)}
	t.Cleanup(func() {
		if !h.closed {
			if err := h.Store.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}
	})
	return h
}

func (h *handle) close(t *testing.T) {
	t.Helper()
	h.closed = true
	if err := h.Store.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// reopen closes h and opens the same database again.
func reopen(t *testing.T, open Opener, h *handle) *handle {
	t.Helper()
	h.close(t)
	return openStore(t, open)
}
