// Package sqlstore is the half of the SQL store engines that is the same
// on SQLite (store/sqlite) and PostgreSQL (store/postgres): every read of
// store.Store and store.ACMEStore, the small direct writes (ACME records,
// nonces, checkpoints), the front of the group-committed writes
// (validate, queue, hand back the results), schema migrations and the
// audit-leaf backfill. Each engine embeds a *Store and keeps only what is
// its own: connections and their settings, how a batch is written, locks,
// notifications.
//
// Start with Store and New. An engine hands New its connections through
// the small Conn and DB interfaces (query, exec, scan, transaction) and a
// Dialect (engine name, placeholder style, unique-violation test, lock
// statements). Static statements are written once here with '?'
// placeholders and rewritten into the dialect's style when the store is
// opened, not per call. Rows are mapped to records by package sqlrec.
package sqlstore
