package tlsscan

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/mica-pki/mica/internal/discover"
)

// Bounds on a plain-text exchange: a server cannot keep the probe reading.
const (
	maxLineBytes = 1024
	maxLines     = 64
)

// startTLS runs the plain-text exchange that precedes TLS on scheme, if
// any. On return the next byte on conn is the server's first TLS record.
func startTLS(conn net.Conn, scheme discover.Scheme, clientName string) error {
	switch scheme {
	case discover.SchemeTLS:
		return nil
	case discover.SchemePostgres:
		return postgresSSLRequest(conn)
	}
	br := bufio.NewReaderSize(conn, maxLineBytes)
	var err error
	switch scheme {
	case discover.SchemeSMTP:
		err = smtpStartTLS(conn, br, clientName)
	case discover.SchemeIMAP:
		err = imapStartTLS(conn, br)
	default:
		return fmt.Errorf("tlsscan: no STARTTLS for %q", scheme)
	}
	if err == nil && br.Buffered() > 0 {
		// Bytes after the go-ahead would be read as TLS: a server that
		// sends them is not one to trust with a handshake (CVE-2011-0411).
		err = fmt.Errorf("tlsscan: %s server sent data after agreeing to STARTTLS: %w", scheme, errNoCertificate)
	}
	return err
}

// readLine reads one CRLF-terminated line of at most maxLineBytes.
func readLine(br *bufio.Reader) (string, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return "", fmt.Errorf("tlsscan: a line longer than %d bytes: %w", maxLineBytes, errNoCertificate)
	}
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(line), "\r\n"), nil
}

// smtpReply reads one (possibly multi-line) SMTP reply and returns its
// code and lines.
func smtpReply(br *bufio.Reader) (string, []string, error) {
	var lines []string
	for range maxLines {
		line, err := readLine(br)
		if err != nil {
			return "", nil, err
		}
		if len(line) < 3 || strings.Trim(line[:3], "0123456789") != "" {
			return "", nil, fmt.Errorf("tlsscan: %q is not an SMTP reply: %w", truncate(line), errNoCertificate)
		}
		lines = append(lines, line)
		if len(line) == 3 || line[3] == ' ' {
			return line[:3], lines, nil
		}
	}
	return "", nil, fmt.Errorf("tlsscan: an SMTP reply of more than %d lines: %w", maxLines, errNoCertificate)
}

// smtpStartTLS is RFC 3207: greeting, EHLO, STARTTLS, 220.
func smtpStartTLS(w io.Writer, br *bufio.Reader, clientName string) error {
	if code, _, err := smtpReply(br); err != nil {
		return err
	} else if code != "220" {
		return fmt.Errorf("tlsscan: SMTP greeting %s: %w", code, errNoCertificate)
	}
	if _, err := fmt.Fprintf(w, "EHLO %s\r\n", clientName); err != nil {
		return err
	}
	code, lines, err := smtpReply(br)
	if err != nil {
		return err
	}
	offered := false
	for _, l := range lines {
		if len(l) > 4 && strings.EqualFold(strings.TrimSpace(l[4:]), "STARTTLS") {
			offered = true
		}
	}
	if code != "250" || !offered {
		return fmt.Errorf("tlsscan: the SMTP server does not offer STARTTLS: %w", errNoCertificate)
	}
	if _, err := io.WriteString(w, "STARTTLS\r\n"); err != nil {
		return err
	}
	if code, _, err := smtpReply(br); err != nil {
		return err
	} else if code != "220" {
		return fmt.Errorf("tlsscan: the SMTP server refused STARTTLS (%s): %w", code, errNoCertificate)
	}
	return nil
}

// imapStartTLS is RFC 3501 §6.2.1: greeting, STARTTLS, tagged OK.
func imapStartTLS(w io.Writer, br *bufio.Reader) error {
	greeting, err := readLine(br)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(greeting, "* OK") && !strings.HasPrefix(greeting, "* PREAUTH") {
		return fmt.Errorf("tlsscan: %q is not an IMAP greeting: %w", truncate(greeting), errNoCertificate)
	}
	if _, err := io.WriteString(w, "a1 STARTTLS\r\n"); err != nil {
		return err
	}
	for range maxLines {
		line, err := readLine(br)
		if err != nil {
			return err
		}
		if tagged, ok := strings.CutPrefix(line, "a1 "); ok {
			if !strings.HasPrefix(strings.ToUpper(tagged), "OK") {
				return fmt.Errorf("tlsscan: the IMAP server refused STARTTLS: %q: %w", truncate(tagged), errNoCertificate)
			}
			return nil
		}
	}
	return fmt.Errorf("tlsscan: no answer to STARTTLS in %d lines: %w", maxLines, errNoCertificate)
}

// postgresSSLRequest sends PostgreSQL's SSLRequest; the server answers
// one byte: S to go on with TLS, N for no.
func postgresSSLRequest(conn net.Conn) error {
	var msg [8]byte
	binary.BigEndian.PutUint32(msg[0:], 8)
	binary.BigEndian.PutUint32(msg[4:], 80877103)
	if _, err := conn.Write(msg[:]); err != nil {
		return err
	}
	var answer [1]byte
	if _, err := io.ReadFull(conn, answer[:]); err != nil {
		return err
	}
	switch answer[0] {
	case 'S':
		return nil
	case 'N':
		return fmt.Errorf("tlsscan: the PostgreSQL server does not offer TLS: %w", errNoCertificate)
	}
	return fmt.Errorf("tlsscan: answer %q to an SSLRequest is not PostgreSQL's: %w", answer[0], errNoCertificate)
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
