// Package textdiff shows what changed between two texts, line by line, the
// way a reviewer reads a patch: "-" for a line removed, "+" for a line
// added, and a few unchanged lines around each change. It is for the
// policy documents a person proposes, which are small; past a bound it
// says how much changed instead of aligning the lines.
package textdiff

import (
	"fmt"
	"strings"
)

// maxCells bounds the alignment's table (lines of a × lines of b).
const maxCells = 4 << 20

// context is how many unchanged lines are shown around a change.
const context = 2

// Lines returns the changes from a to b, or "" when they are equal.
func Lines(a, b string) string {
	if a == b {
		return ""
	}
	x, y := split(a), split(b)
	if len(x)*len(y) > maxCells {
		return fmt.Sprintf("(%d lines → %d lines: too large to align line by line)\n", len(x), len(y))
	}
	// lcs[i][j] is the longest common subsequence of x[i:] and y[j:].
	lcs := make([][]int32, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int32, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	type line struct {
		op   byte // ' ', '-', '+'
		text string
	}
	var ops []line
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			ops = append(ops, line{' ', x[i]})
			i, j = i+1, j+1
		case j < len(y) && (i == len(x) || lcs[i][j+1] >= lcs[i+1][j]):
			ops = append(ops, line{'+', y[j]})
			j++
		default:
			ops = append(ops, line{'-', x[i]})
			i++
		}
	}
	var out strings.Builder
	last := -1 // the last line written
	for k, o := range ops {
		if o.op == ' ' {
			continue
		}
		from := max(k-context, last+1)
		if last >= 0 && from > last+1 {
			out.WriteString("…\n")
		}
		for c := from; c < k; c++ {
			fmt.Fprintf(&out, "  %s\n", ops[c].text)
		}
		fmt.Fprintf(&out, "%c %s\n", o.op, o.text)
		last = k
		// Trailing context: up to the next change or context lines.
		for c := k + 1; c < len(ops) && c <= k+context && ops[c].op == ' '; c++ {
			fmt.Fprintf(&out, "  %s\n", ops[c].text)
			last = c
		}
	}
	return out.String()
}

func split(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}
