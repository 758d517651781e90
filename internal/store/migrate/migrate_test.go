package migrate

import (
	"testing"
	"testing/fstest"
)

func TestLoad(t *testing.T) {
	sql := &fstest.MapFile{Data: []byte("SELECT 1;")}
	tests := []struct {
		name    string
		files   fstest.MapFS
		want    []int
		wantErr bool
	}{
		{"Ordered", fstest.MapFS{"m/0002_b.sql": sql, "m/0001_a.sql": sql, "m/0010_c.sql": sql}, []int{1, 2, 10}, false},
		{"Empty", fstest.MapFS{"m/.keep": sql}, nil, true},
		{"NoNumber", fstest.MapFS{"m/init.sql": sql}, nil, true},
		{"NotSQL", fstest.MapFS{"m/0001_a.txt": sql}, nil, true},
		{"DuplicateVersion", fstest.MapFS{"m/0001_a.sql": sql, "m/1_b.sql": sql}, nil, true},
		{"ZeroVersion", fstest.MapFS{"m/0000_a.sql": sql}, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ms, err := Load(tc.files, "m")
			if (err != nil) != tc.wantErr {
				t.Fatalf("Load error = %v, want error %v", err, tc.wantErr)
			}
			var got []int
			for _, m := range ms {
				got = append(got, m.Version)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("versions %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("versions %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestPending(t *testing.T) {
	all := []Migration{{Version: 1}, {Version: 2}, {Version: 3}}
	tests := []struct {
		name    string
		applied []int
		want    int
		wantErr bool
	}{
		{"Fresh", nil, 3, false},
		{"Partial", []int{1}, 2, false},
		{"Current", []int{1, 2, 3}, 0, false},
		{"NewerDatabase", []int{1, 2, 3, 4}, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Pending(all, tc.applied)
			if (err != nil) != tc.wantErr || len(p) != tc.want {
				t.Fatalf("Pending = %d, %v; want %d, error %v", len(p), err, tc.want, tc.wantErr)
			}
		})
	}
}
