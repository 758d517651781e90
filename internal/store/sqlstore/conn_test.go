package sqlstore

import (
	"strconv"
	"testing"
)

func TestRebind(t *testing.T) {
	question := Dialect{Placeholder: func(int) string { return "?" }}
	dollar := Dialect{Placeholder: func(n int) string { return "$" + strconv.Itoa(n) }}
	tests := []struct {
		name, in, want string
		d              Dialect
	}{
		{"none", "SELECT 1", "SELECT 1", dollar},
		{"numbered in order", "UPDATE t SET a = ?, b = ? WHERE id = ?", "UPDATE t SET a = $1, b = $2 WHERE id = $3", dollar},
		{"at the ends", "?x?", "$1x$2", dollar},
		{"ten and more", "??????????", "$1$2$3$4$5$6$7$8$9$10", dollar},
		{"question marks kept", "SELECT ? WHERE ?", "SELECT ? WHERE ?", question},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.d.rebind(tt.in); got != tt.want {
				t.Errorf("rebind(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
