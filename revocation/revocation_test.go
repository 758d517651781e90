package revocation

import (
	"slices"
	"testing"
	"time"
)

func TestSet(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name        string
		snapshot    *Snapshot
		events      []Event
		wantSerials []string
		wantDenied  []string
		wantSeq     int64
	}{
		{"Empty", nil, nil, []string{}, []string{}, 0},
		{"RevokeAndDeny", nil, []Event{
			{Seq: 3, Kind: KindRevoked, Serial: "ab", NotAfter: now.Add(time.Hour)},
			{Seq: 5, Kind: KindDenied, Identity: "spiffe://x/a"},
		}, []string{"ab"}, []string{"spiffe://x/a"}, 5},
		{"AllowUndoesDeny", nil, []Event{
			{Seq: 1, Kind: KindDenied, Identity: "spiffe://x/a"},
			{Seq: 2, Kind: KindAllowed, Identity: "spiffe://x/a"},
		}, []string{}, []string{}, 2},
		{"ReplayIgnored", &Snapshot{Seq: 10, Revoked: []Event{{Serial: "01", NotAfter: now.Add(time.Hour)}}}, []Event{
			{Seq: 9, Kind: KindRevoked, Serial: "old"},
			{Seq: 11, Kind: KindRevoked, Serial: "02", NotAfter: now.Add(time.Hour)},
		}, []string{"01", "02"}, []string{}, 11},
		{"ExpiredPruned", nil, []Event{
			{Seq: 1, Kind: KindRevoked, Serial: "gone", NotAfter: now.Add(-time.Minute)},
		}, []string{}, []string{}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s Set
			if tc.snapshot != nil {
				s.Reset(*tc.snapshot)
			}
			for _, e := range tc.events {
				s.Apply(e)
			}
			s.Prune(now)
			if got := s.Serials(); !slices.Equal(got, tc.wantSerials) {
				t.Errorf("serials %v, want %v", got, tc.wantSerials)
			}
			if got := s.Identities(); !slices.Equal(got, tc.wantDenied) {
				t.Errorf("denied %v, want %v", got, tc.wantDenied)
			}
			if s.Seq() != tc.wantSeq {
				t.Errorf("seq %d, want %d", s.Seq(), tc.wantSeq)
			}
			for _, serial := range tc.wantSerials {
				if !s.Revoked(serial) {
					t.Errorf("Revoked(%s) = false", serial)
				}
			}
		})
	}
}
