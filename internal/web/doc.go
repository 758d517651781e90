// Package web is mica's web console, served under /ui/ on the API
// listener: the pages an on-call engineer opens first — an overview of the
// server's health, the inventory with its certificate pages, the expiry
// timeline, revocations and the deny list, the audit log, the approvals
// queue and the expiry report.
//
// The console decides nothing. A browser signs in with a one-time link
// that an administrator asks for with its credential (`mica console
// login`), or with a client certificate; the authority opens a session
// bound to that credential and authenticates it again on every request
// (session.go). Every page and action then calls the same authority
// methods as the REST API, with the session's principal, so the authorize
// table and the approval rules answer for the console as for every door;
// a button is shown only where the authority would allow the action
// (MayRevoke, MayDecide, Authorize), and the action asks again.
//
// Pages are rendered on the server with html/template and read the store
// through bounded queries: the inventory a page at a time, the timeline and
// the overview as aggregates. Assets are embedded. The one script,
// console.js, only refreshes marked regions in place; it is loaded with a
// per-response nonce under a strict Content-Security-Policy, and every page
// works without it. Changes are POSTs checked for a token bound to the
// session and for the request's Origin.
//
// Start reading at New (routes and headers), then session.go.
package web
