// Package sqlrec maps store records to SQL rows and back, for the SQL
// engines (store/sqlite, store/postgres): the queued write operations,
// their validation, column encodings (times as unix microseconds, SANs as
// a JSON array), row scanning and the WHERE clauses of the list queries.
// Keeping this in one place is what keeps the two engines' semantics alike;
// package sqlstore runs the statements the engines share.
package sqlrec
