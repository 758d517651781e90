// Package proxy is mica's mTLS gateway, the engine of `mica proxy`. It runs
// listeners of two kinds:
//
//   - inbound: terminates mutual TLS (a config from mtls.ServerConfig: the
//     handshake already refuses unknown CAs, expired, revoked and
//     wrong-usage certificates), authorizes the verified identity by the
//     listener's rules — optionally per request path prefix — and forwards
//     to a plain-HTTP backend. It removes every identity header the client
//     sent and sets verified ones (see headers.go for the format).
//   - outbound: accepts plain HTTP on loopback from a service that cannot
//     speak mTLS and forwards to an https upstream over mutual TLS (a config
//     from mtls.ClientConfig), checking the upstream's identity.
//
// Both sides keep connections alive; the upstream side resumes TLS sessions.
// [Proxy.Apply] starts listeners and, called again, reloads: changed rules,
// backends and headers apply to new requests while in-flight ones finish,
// listeners whose address and mode did not change keep running, and removed
// ones drain. Certificates are not the proxy's business: the mtls.Source
// hot-reloads them.
//
// Start reading at [ListenerConfig] and [Proxy].
package proxy
