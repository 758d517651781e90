package discover

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path"
	"strconv"
	"strings"
)

// Scheme says how a certificate was reached: a TLS handshake (directly or
// after a STARTTLS exchange of a protocol) or a file.
type Scheme string

const (
	SchemeTLS      Scheme = "tls"      // TLS from the first byte
	SchemeSMTP     Scheme = "smtp"     // SMTP, then STARTTLS (RFC 3207)
	SchemeIMAP     Scheme = "imap"     // IMAP, then STARTTLS (RFC 3501 §6.2.1)
	SchemePostgres Scheme = "postgres" // PostgreSQL SSLRequest, then TLS
	SchemeFile     Scheme = "file"     // a file on a host
)

// Endpoint reports whether the scheme is a network endpoint (not a file).
func (s Scheme) Endpoint() bool {
	switch s {
	case SchemeTLS, SchemeSMTP, SchemeIMAP, SchemePostgres:
		return true
	}
	return false
}

// Location is where a certificate was seen, in a form that has exactly one
// text (String): sightings are keyed by it, and a rescan of the same place
// must produce the same text.
type Location struct {
	Scheme Scheme
	// Host is the endpoint's host as the scan was given it (a name or an
	// address), or the name of the host a file is on.
	Host string
	// Port is the endpoint's TCP port; zero for files.
	Port int
	// ServerName is the SNI the scan sent, when it is not Host; empty
	// otherwise. Endpoints answering several names are one location per
	// name.
	ServerName string
	// Path is a file's absolute, clean path; empty for endpoints.
	Path string
	// Entry names the certificate within a file that holds several: a
	// keystore alias, or the position (#2) of a leaf in a PEM bundle.
	Entry string
}

// Limits on a location's parts, so that a report cannot make keys of any
// size.
const (
	maxHostLen  = 253
	maxPathLen  = 4096
	maxEntryLen = 256
)

// String is the location's one text form: tls://host:port, with ?sni=name
// when the SNI is not the host; file://host/path, with #entry for one
// entry of a keystore or bundle.
func (l Location) String() string {
	u := url.URL{Scheme: string(l.Scheme)}
	if l.Scheme == SchemeFile {
		u.Host, u.Path, u.Fragment = l.Host, l.Path, l.Entry
		return u.String()
	}
	u.Host = net.JoinHostPort(l.Host, strconv.Itoa(l.Port))
	if l.ServerName != "" && l.ServerName != l.Host {
		u.RawQuery = url.Values{"sni": {l.ServerName}}.Encode()
	}
	return u.String()
}

// Under reports whether l is a file at or below dir on host (the scope of
// a finished file scan).
func (l Location) Under(host, dir string) bool {
	if l.Scheme != SchemeFile || l.Host != host {
		return false
	}
	dir = path.Clean(dir)
	return l.Path == dir || dir == "/" || strings.HasPrefix(l.Path, dir+"/")
}

// ParseLocation reads a location written by String, checking every part.
// It accepts only the canonical text, so that two spellings of one place
// cannot become two sightings.
func ParseLocation(s string) (Location, error) {
	if len(s) > maxPathLen+maxHostLen+maxEntryLen+32 {
		return Location{}, errors.New("discover: location is longer than any this server accepts")
	}
	u, err := url.Parse(s)
	if err != nil {
		return Location{}, fmt.Errorf("discover: location %q is not a URL like tls://host:443 or file://host/path: %v", s, err)
	}
	l := Location{Scheme: Scheme(u.Scheme)}
	switch {
	case l.Scheme == SchemeFile:
		l.Host, l.Path, l.Entry = u.Host, u.Path, u.Fragment
		if u.RawQuery != "" || u.User != nil || !path.IsAbs(l.Path) || path.Clean(l.Path) != l.Path || len(l.Path) > maxPathLen || len(l.Entry) > maxEntryLen {
			return Location{}, fmt.Errorf("discover: file location %q must be file://host/absolute/clean/path[#entry]", s)
		}
	case l.Scheme.Endpoint():
		host, port, err := net.SplitHostPort(u.Host)
		if err != nil {
			return Location{}, fmt.Errorf("discover: endpoint location %q needs host:port: %v", s, err)
		}
		l.Host = host
		if l.Port, err = strconv.Atoi(port); err != nil || l.Port < 1 || l.Port > 65535 {
			return Location{}, fmt.Errorf("discover: endpoint location %q: port %q is not 1-65535", s, port)
		}
		q := u.Query()
		l.ServerName = q.Get("sni")
		if u.Path != "" || u.Fragment != "" || u.User != nil || len(q) > 1 || len(q) == 1 && l.ServerName == "" || len(l.ServerName) > maxHostLen {
			return Location{}, fmt.Errorf("discover: endpoint location %q must be %s://host:port[?sni=name]", s, l.Scheme)
		}
	default:
		return Location{}, fmt.Errorf("discover: location %q: scheme must be tls, smtp, imap, postgres or file", s)
	}
	if l.Host == "" || len(l.Host) > maxHostLen || strings.ContainsAny(l.Host, " /\\") {
		return Location{}, fmt.Errorf("discover: location %q names no usable host", s)
	}
	if l.String() != s {
		return Location{}, fmt.Errorf("discover: location %q is not in canonical form; write it as %q", s, l.String())
	}
	return l, nil
}

// HostAddr is the endpoint's host as an address, when it is one.
func (l Location) HostAddr() (netip.Addr, bool) {
	a, err := netip.ParseAddr(l.Host)
	return a.Unmap(), err == nil
}
