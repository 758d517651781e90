// Package credential is the on-disk form of a mica credential — a private
// key, its certificate chain and the trust bundle — and the one place that
// reads and writes it: `mica cert issue` and `renew`, `mica agent` and
// mtls.FileSource all use it.
//
// A credential directory holds five files:
//
//	key.pem        the private key (PKCS#8, mode 0600); it never leaves the machine
//	cert.pem       the leaf certificate
//	chain.pem      the intermediates, the leaf's issuer first
//	fullchain.pem  leaf and intermediates: what a TLS server presents
//	bundle.pem     the trusted roots, to verify peers with
//
// The files a credential is made of must change together: a reader that sees
// a new certificate next to the old key has no usable credential. So, as
// Kubernetes' atomic writer does, [Dir.Write] puts each new set in a fresh
// versioned directory (..2026_01_02_15_04_05.123456) and switches the
// symbolic link ..data to it with one rename; the five names are symbolic
// links through ..data, and the previous version is removed after the
// switch. A crash at any moment leaves ..data on the old set or the new one,
// both complete. [Dir.Load] resolves ..data once and reads every file from
// that one version, so it never returns a mismatched pair. A program that
// opens cert.pem and then key.pem by name can still straddle a switch by the
// microseconds between its two opens; it should read through ..data once, or
// check the pair and read again (as Load and mtls.FileSource do).
//
// Services that expect a file elsewhere (Dir.Copies, the agent's files:)
// get a plain copy, written after the switch with the key last: they can
// read it without entering the directory, and should do so when their
// reload hook runs.
//
// Directories written by older versions of mica hold plain files. Load reads
// them, and the first Write adopts them: their content moves into a version
// of its own, each name becomes a link to it (readers see the same bytes
// throughout), and only then does the new set switch in.
//
// Start reading at [Dir]. The package uses only the standard library (and
// mica's atomicfile, which does too), so the public mtls package can import
// it.
package credential
