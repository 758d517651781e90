// Package pgtest gives tests a fresh, empty PostgreSQL database. With
// MICA_TEST_POSTGRES_URL set it creates databases on that server;
// otherwise it starts a throwaway cluster (initdb + pg_ctl) in a temporary
// directory, listening on a loopback address only (testaddr), with fsync
// on, and stops it in Cluster.Stop. Missing PostgreSQL binaries fail the
// test: an engine that is silently skipped is an engine that is never
// tested. Under -short (the unit layer, see testlayer) every test that
// asks for a database is skipped instead, and no server is started.
//
// Keep one Cluster per test binary, stopped from TestMain:
//
//	var cluster pgtest.Cluster
//
//	func TestMain(m *testing.M) { os.Exit(cluster.Run(m)) }
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mica-pki/mica/internal/testlayer"
)

// EnvURL names the variable that points the tests at an existing server,
// as a URL to a database the user may create databases from.
const EnvURL = "MICA_TEST_POSTGRES_URL"

// Cluster hands out databases. The zero value is ready to use: the server
// is found or started on the first call to Database.
type Cluster struct {
	once       sync.Once
	adminURL   string
	local      *local // nil when using EnvURL
	err        error
	forceLocal bool // ignore EnvURL (Local)
}

// Database creates a new empty database, returns its URL, and drops it
// when t ends.
func (c *Cluster) Database(t testing.TB) string {
	t.Helper()
	testlayer.Integration(t, "needs PostgreSQL")
	c.once.Do(func() { c.adminURL, c.local, c.err = start(c.forceLocal) })
	if c.err != nil {
		t.Fatalf("pgtest: %v", c.err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.adminURL)
	if err != nil {
		t.Fatalf("pgtest: connect to %s: %v", redact(c.adminURL), err)
	}
	defer conn.Close(ctx)
	b := make([]byte, 8)
	rand.Read(b)
	name := "t_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, c.adminURL)
		if err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(c.adminURL)
	if err != nil {
		t.Fatalf("pgtest: parse server URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// Run runs the tests of m, then stops the cluster; it returns the exit
// code for TestMain, failing when the cluster would not stop.
func (c *Cluster) Run(m *testing.M) int {
	code := m.Run()
	if err := c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest: stop the test cluster:", err)
		return max(code, 1)
	}
	return code
}

// Stop stops the cluster this Cluster started, if any, and removes its
// directory.
func (c *Cluster) Stop() error {
	if c.local == nil {
		return nil
	}
	return c.local.stop()
}

func start(forceLocal bool) (adminURL string, l *local, err error) {
	if u := os.Getenv(EnvURL); u != "" && !forceLocal {
		return u, nil, nil
	}
	l, err = startLocal()
	if err != nil {
		return "", nil, err
	}
	return l.url, l, nil
}

func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
