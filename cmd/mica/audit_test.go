package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"database/sql"
	"encoding/pem"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/auditlog"
	"github.com/mica-pki/mica/internal/keys"
)

// TestAuditLog runs the audit commands against a real server on each
// engine, then tampers with the events table directly, as an attacker with
// database access would, and expects `mica audit verify` to name the first
// bad leaf each time, and an untouched log to verify.
func TestAuditLog(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			e := newTestEnv(t, engine)
			e.issue("spiffe://example.org/billing/a", "service")
			e.issue("spiffe://example.org/billing/b", "service")
			holder := e.issue("spiffe://example.org/billing/c", "service")
			serial := readLeaf(t, holder).SerialNumber.Text(16)

			// The issuance response carries the leaf index, and the holder
			// proves its own certificate with its own credential.
			resp := e.enrollDirect(t, "spiffe://example.org/billing/d")
			if resp.LeafIndex <= 0 {
				t.Errorf("issuance response leaf_index = %d, want the event's index in the log", resp.LeafIndex)
			}
			out := e.micaOK("audit", "proof", serial, "--cert", filepath.Join(holder, certFile), "--key", filepath.Join(holder, keyFile))
			if !strings.HasPrefix(out, "verified: cert.issued of "+serial) {
				t.Errorf("holder's audit proof: %q", out)
			}
			if out := e.micaOK("audit", "proof", resp.Serial); !strings.Contains(out, "leaf "+itoa(resp.LeafIndex)+" ") {
				t.Errorf("audit proof of %s does not name leaf %d: %q", resp.Serial, resp.LeafIndex, out)
			}
			e.micaOK("cert", "revoke", serial, "--reason", "superseded")
			if out := e.micaOK("audit", "search", "--action", "cert.revoked", "--since", "1h"); !strings.Contains(out, serial) {
				t.Errorf("audit search for the revocation: %q", out)
			}
			if out := e.micaOK("audit", "export", "--format", "jsonl"); strings.Count(out, "\n") < 8 || !strings.Contains(out, `"action":"cert.revoked"`) {
				t.Errorf("audit export: %q", out)
			}

			saved := filepath.Join(t.TempDir(), "saved.txt")
			if err := os.WriteFile(saved, []byte(e.micaOK("audit", "checkpoint")), 0o600); err != nil {
				t.Fatal(err)
			}
			if out := e.micaOK("audit", "verify", "--checkpoint", saved); !strings.Contains(out, "verified") {
				t.Fatalf("untouched log: %q", out)
			}

			db := e.openDB(t)
			var n int64
			if err := db.QueryRow("SELECT count(*) FROM events WHERE leaf_index IS NOT NULL").Scan(&n); err != nil {
				t.Fatal(err)
			}
			var lastAction string
			if err := db.QueryRow("SELECT action FROM events WHERE leaf_index = " + itoa(n-1)).Scan(&lastAction); err != nil || lastAction != "cert.revoked" {
				t.Fatalf("last leaf is %q (%v), want the revocation", lastAction, err)
			}
			tamper := []struct {
				name          string
				do, undo      []string
				wantFirstBad  int64
				restoresClean bool
			}{
				{"EditOneLeaf",
					[]string{"UPDATE events SET outcome = 'denied' WHERE leaf_index = 3"},
					[]string{"UPDATE events SET outcome = 'ok' WHERE leaf_index = 3"}, 3, true},
				{"SwapTwoLeaves",
					swapLeaves(4, 7), swapLeaves(4, 7), 4, true},
				{"DeleteLastLeaf",
					[]string{"DELETE FROM events WHERE leaf_index = " + itoa(n-1)}, nil, n - 1, false},
				// Leaves deleted from n-3 on, then the server records more
				// events: they must not take the deleted leaves' places and
				// hide where the deletion began.
				{"DeleteTailThenNewEvents",
					[]string{"DELETE FROM events WHERE leaf_index >= " + itoa(n-3)}, nil, n - 3, false},
			}
			for _, tc := range tamper {
				t.Run(tc.name, func(t *testing.T) {
					for _, q := range tc.do {
						if err := tamperWith(db, engine, q); err != nil {
							t.Fatalf("%s: %v", q, err)
						}
					}
					if tc.name == "DeleteTailThenNewEvents" {
						e.issue("spiffe://example.org/billing/after", "service")
					}
					r := e.mica("audit", "verify", "--checkpoint", saved)
					if want := "first bad leaf is " + itoa(tc.wantFirstBad) + ":"; r.code != 1 || !strings.Contains(r.stderr, want) {
						t.Errorf("verify after tampering: exit %d, stderr %q; want exit 1 and %q", r.code, r.stderr, want)
					}
					for _, q := range tc.undo {
						if _, err := db.Exec(q); err != nil {
							t.Fatalf("%s: %v", q, err)
						}
					}
					if tc.restoresClean {
						e.micaOK("audit", "verify", "--checkpoint", saved)
					}
				})
			}

			t.Run("ForgedCheckpointRejected", func(t *testing.T) {
				_, key, _ := ed25519.GenerateKey(rand.Reader)
				forger, err := auditlog.NewSigner(auditOrigin("example.org"), key)
				if err != nil {
					t.Fatal(err)
				}
				note, err := auditlog.SignCheckpoint(forger, 3, make([]byte, 32))
				if err != nil {
					t.Fatal(err)
				}
				forged := filepath.Join(t.TempDir(), "forged.txt")
				os.WriteFile(forged, note, 0o600)
				r := e.mica("audit", "verify", "--checkpoint", forged)
				if r.code != 1 || !strings.Contains(r.stderr, "not signed by this log's key") {
					t.Errorf("verify with a forged checkpoint: exit %d, stderr %q", r.code, r.stderr)
				}
			})
		})
	}
}

// swapLeaves exchanges two rows' places in the log, keeping each row's
// contents and stored hash: a reordering, not an edit.
func swapLeaves(i, j int64) []string {
	return []string{
		"UPDATE events SET leaf_index = -1 WHERE leaf_index = " + itoa(i),
		"UPDATE events SET leaf_index = " + itoa(i) + " WHERE leaf_index = " + itoa(j),
		"UPDATE events SET leaf_index = " + itoa(j) + " WHERE leaf_index = -1",
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// openDB opens the server's database directly, bypassing mica.
// tamperWith runs q as someone with the database owner's rights would, who
// does not stop at foreign keys: on PostgreSQL with the referential
// triggers off for its transaction.
func tamperWith(db *sql.DB, engine, q string) error {
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if engine == "postgres" {
		if _, err := tx.Exec("SET LOCAL session_replication_role = replica"); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(q); err != nil {
		return err
	}
	return tx.Commit()
}

func (e *testEnv) openDB(t *testing.T) *sql.DB {
	t.Helper()
	// The server may be writing to the same database meanwhile: wait for
	// its write lock as the server's own connections do, rather than fail
	// at once with SQLITE_BUSY, and take the lock when a transaction begins.
	driver, dsn := "sqlite", filepath.Join(e.dataDir, "mica.db")+"?_pragma=busy_timeout(10000)&_txlock=immediate"
	if e.engine == "postgres" {
		driver, dsn = "pgx", e.dbURL
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// enrollDirect enrolls through the Go SDK, to see the raw response.
func (e *testEnv) enrollDirect(t *testing.T, id string) *client.CertificateResponse {
	t.Helper()
	ctx := context.Background()
	tok, err := e.admin.CreateToken(ctx, client.TokenRequest{Identity: id, Profile: "service"})
	if err != nil {
		t.Fatal(err)
	}
	key, err := keys.Generate(keys.Default, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.admin.Enroll(ctx, tok.Token, client.CertificateRequest{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}
