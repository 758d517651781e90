// Package sqlstore is the SQL of mica's store, written once for both
// engines (store/sqlite and store/postgres): the schema and its
// migrations, every statement, how records map to rows and back, every
// read of store.Store and store.ACMEStore, the direct writes (ACME
// records, nonces, checkpoints) and the front of the group-committed
// writes (validate, encode, queue, hand back what the batch assigned).
// An engine embeds a *Store and keeps only what truly differs: its
// connections and their settings, how a batch of queued writes is
// written (each engine's write.go), and PostgreSQL's notifications.
//
// Where to look:
//   - rows.go: the column lists, CertRow and EventRow, encodings and
//     scanning. A new column of a record is added here, in the record
//     type (package store) and in a migration pair under
//     migrations/sqlite and migrations/postgres; the statements here and
//     in the engines are built from the column lists.
//   - migrate.go: the numbered migrations, applied top to bottom.
//   - store.go: Store, New and the fixed statements; conn.go: the
//     Dialect and the small Conn, DB and Reader interfaces an engine
//     hands New.
//   - read.go, report.go, audit.go, revocation.go, acme.go: the reads
//     and the direct writes; queries.go: queries built from a filter.
//   - ops.go and write.go: the queued writes (Op) and their results.
package sqlstore
