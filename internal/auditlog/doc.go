// Package auditlog makes mica's lifecycle events a tamper-evident log: every
// event (store.Event, written in the same transaction as the change it
// records) is a leaf of an RFC 6962 Merkle tree, and signed checkpoints
// (C2SP signed notes, Ed25519) commit to the tree's size and root. Anyone
// holding a checkpoint can later prove that the log still contains exactly
// what it signed: an edited, deleted or reordered leaf changes the root.
//
// Start reading at Log (the server side: keeps the tree in memory from the
// stored leaf hashes, signs checkpoints in Run, answers inclusion and
// consistency proofs) and Verification (the client side: recomputes every
// leaf hash and the tree from the events themselves and names the first
// bad leaf). The leaf encoding lives in auditlog/leaf, shared with the
// store engines; Throttle records the events a client can cause at will
// (failed authentications, rate-limit refusals, anomalies) at most twice
// per key and minute: the first at once, the rest as one summary.
package auditlog
