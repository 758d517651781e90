package bench

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/authority"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/internal/store/enginetest"
	"github.com/mica-pki/mica/internal/store/postgres/pgtest"
	"github.com/mica-pki/mica/internal/store/sqlstore"
	"github.com/mica-pki/mica/internal/testpki"
)

var cluster pgtest.Cluster

func TestMain(m *testing.M) { os.Exit(cluster.Run(m)) }

// planner is the store's ability to explain its queries (sqlstore.Plans).
type planner interface {
	Plans(ctx context.Context, sample sqlstore.PlanSample) ([]sqlstore.Plan, error)
}

// TestPlansAtScale is the million-certificate run at test size: it loads
// 20,000 live and 2,000 revoked certificates as `mica bench scale` does
// and checks how each engine means to run every query that must stay fast
// with a million: no search per row that is not bound to the row's own
// identity or serial (the quadratic expiry report), no full scan of a
// table, no sort of everything a page is cut from, and the passes over all
// live or revoked certificates read a covering index, not the rows. It
// checks the plans (EXPLAIN), not the time they take.
func TestPlansAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("loads 22,000 certificates per engine")
	}
	pki := testpki.New(t, "example.org")
	now := time.Now()
	enginetest.Each(t, &cluster, func(t *testing.T, st store.Store) {
		ctx := context.Background()
		cfg := LoadConfig{Live: 20_000, Revoked: 2_000, Issuer: pki.Intermediate, Signer: pki.IntermediateKey,
			IssuerID: authority.Fingerprint(pki.Intermediate.Raw), Now: now, Seed: 1,
			// Few writers: the test is about plans, and this machine may be
			// shared; 128 would queue revocations behind group commits.
			Workers: 16}
		if _, err := Load(ctx, st, cfg); err != nil {
			t.Fatal(err)
		}
		engine := "sqlite"
		if a, ok := st.(interface{ Analyze(context.Context) error }); ok {
			// PostgreSQL plans from statistics, which autovacuum keeps in
			// production: gather them as it would.
			engine = "postgres"
			if err := a.Analyze(ctx); err != nil {
				t.Fatal(err)
			}
		}
		sample := sampleOf(t, st, now)
		sample.Issuer = cfg.IssuerID
		plans, err := st.(planner).Plans(ctx, sample)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range plans {
			if want := sqliteIndex[p.Name]; engine == "sqlite" && want != "" && !strings.Contains(strings.Join(p.Lines, "\n"), want) {
				t.Errorf("%s: does not read %s\n%s", p.Name, want, strings.Join(p.Lines, "\n"))
			}
			if err := judge(engine, p); err != nil {
				t.Errorf("%s: %v\n%s\n%s", p.Name, err, p.SQL, strings.Join(p.Lines, "\n"))
			} else if testing.Verbose() {
				t.Logf("%s (%s):\n%s", p.Name, p.Cost, strings.Join(p.Lines, "\n"))
			}
		}
	})
}

// sqliteIndex names the index a SQLite plan must read where another index
// would pass judge but cost more: a page of live certificates at a deep
// offset skips its rows in the partial index of the live ones, where the
// not_after index would read every row skipped to see its status; a page
// of a profile's revoked certificates reads them alone, where the profile
// index would read every certificate of the profile.
var sqliteIndex = map[string]string{
	"list active":               "certificates_active",
	"list revoked of a profile": "certificates_revoked_profile",
}

// sampleOf picks an identity, profile, owner and serial from st.
func sampleOf(t *testing.T, st store.Store, now time.Time) sqlstore.PlanSample {
	t.Helper()
	certs, err := st.ListCertificates(context.Background(), store.Filter{Status: store.StatusActive, Now: now, Limit: 500})
	if err != nil || len(certs) == 0 {
		t.Fatalf("list: %v", err)
	}
	c := certs[len(certs)/2]
	return sqlstore.PlanSample{Identity: c.Identity, Profile: c.Profile, Owner: c.Owner, Serial: c.Serial, Now: now}
}

// judge says what is wrong with a plan, nil when nothing is.
func judge(engine string, p sqlstore.Plan) error {
	if engine == "sqlite" {
		return judgeSQLite(p)
	}
	return judgePostgres(p)
}

// bound is what a search made once per row of another must be bound by:
// an equality on the row's own key, so that it finds a handful of rows.
var bound = []string{"identity=?", "serial=?", "fingerprint=?", "seq=?"}

// judgeSQLite reads EXPLAIN QUERY PLAN, one step a line, indented by
// depth.
func judgeSQLite(p sqlstore.Plan) error {
	correlated := -1 // depth of the correlated subquery being read, -1 for none
	for _, line := range p.Lines {
		depth := (len(line) - len(strings.TrimLeft(line, " "))) / 2
		step := strings.TrimSpace(line)
		if correlated >= 0 && depth <= correlated {
			correlated = -1
		}
		switch {
		case strings.HasPrefix(step, "CORRELATED"):
			correlated = depth
		case strings.HasPrefix(step, "SCAN ") && !strings.Contains(step, "INDEX") &&
			!strings.HasPrefix(step, "SCAN (") && !strings.HasPrefix(step, "SCAN CONSTANT"):
			return fmt.Errorf("reads a whole table: %q", step)
		case strings.Contains(step, "TEMP B-TREE FOR GROUP BY"):
			return fmt.Errorf("sorts every row it groups: %q", step)
		case p.Cost == sqlstore.CostPage && step == "USE TEMP B-TREE FOR ORDER BY":
			return fmt.Errorf("sorts everything a page is cut from: %q", step)
		}
		if correlated >= 0 && depth > correlated && (strings.HasPrefix(step, "SEARCH ") || strings.HasPrefix(step, "SCAN ")) &&
			!containsAny(step, bound) {
			return fmt.Errorf("searches once per row by something other than the row's own key (quadratic): %q", step)
		}
		if p.Covering && (strings.HasPrefix(step, "SEARCH ") || strings.HasPrefix(step, "SCAN ")) &&
			strings.Contains(step, "certificates") && !strings.Contains(step, "COVERING INDEX") {
			return fmt.Errorf("reads certificate rows where an index covers what it needs: %q", step)
		}
	}
	return nil
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// pgNode is one node of PostgreSQL's EXPLAIN: its line and the property
// lines below it (Index Cond, Filter, …), and its children.
type pgNode struct {
	line     string
	props    []string
	children []*pgNode
}

// parsePostgres reads EXPLAIN's text into its tree.
func parsePostgres(lines []string) *pgNode {
	root := &pgNode{}
	type open struct {
		indent int
		n      *pgNode
	}
	stack := []open{{-1, root}}
	for i, line := range lines {
		indent := len(line) - len(strings.TrimLeft(line, " "))
		text := strings.TrimSpace(line)
		isNode := i == 0 || strings.HasPrefix(text, "->")
		if strings.HasPrefix(text, "SubPlan") || strings.HasPrefix(text, "InitPlan") {
			isNode = true
		}
		if !isNode {
			// A property of the innermost node above it.
			top := stack[len(stack)-1].n
			top.props = append(top.props, text)
			continue
		}
		for len(stack) > 1 && stack[len(stack)-1].indent >= indent {
			stack = stack[:len(stack)-1]
		}
		n := &pgNode{line: strings.TrimSpace(strings.TrimPrefix(text, "->"))}
		parent := stack[len(stack)-1].n
		parent.children = append(parent.children, n)
		stack = append(stack, open{indent, n})
	}
	return root
}

// estimatedRows is the node's rows=N estimate.
func (n *pgNode) estimatedRows() int {
	_, after, ok := strings.Cut(n.line, " rows=")
	if !ok {
		return 0
	}
	var rows int
	fmt.Sscan(strings.TrimRight(strings.Fields(after)[0], ")"), &rows)
	return rows
}

// judgePostgres reads EXPLAIN's tree: the inner side of a nested loop and
// a subplan are searches run once per row.
func judgePostgres(p sqlstore.Plan) error {
	var walk func(n *pgNode, perRow bool) error
	walk = func(n *pgNode, perRow bool) error {
		switch {
		case strings.HasPrefix(n.line, "Seq Scan on certificates"), strings.HasPrefix(n.line, "Seq Scan on events"):
			if perRow {
				return fmt.Errorf("reads a whole table once per row (quadratic): %q", n.line)
			}
			if p.Cost == sqlstore.CostPage || p.Covering {
				return fmt.Errorf("reads a whole table: %q", n.line)
			}
		case strings.HasPrefix(n.line, "Sort"):
			if limit := map[sqlstore.Cost]int{sqlstore.CostPage: 1000, sqlstore.CostPass: 10_000}[p.Cost]; n.estimatedRows() > limit {
				return fmt.Errorf("sorts about %d rows, more than a %s should: %q", n.estimatedRows(), p.Cost, n.line)
			}
		}
		if perRow && strings.Contains(n.line, " on certificates") && !containsAny(strings.Join(n.props, " "), []string{"identity = ", "serial = ", "fingerprint = "}) {
			return fmt.Errorf("searches once per row by something other than the row's own key (quadratic): %q %v", n.line, n.props)
		}
		if p.Covering && strings.Contains(n.line, " on certificates") && !strings.HasPrefix(n.line, "Index Only Scan") {
			return fmt.Errorf("reads certificate rows where an index covers what it needs: %q", n.line)
		}
		for i, c := range n.children {
			inner := perRow || strings.HasPrefix(c.line, "SubPlan") ||
				(i > 0 && (strings.HasPrefix(n.line, "Nested Loop") || strings.HasPrefix(n.line, "SubPlan")))
			if err := walk(c, inner); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(parsePostgres(p.Lines), false)
}
