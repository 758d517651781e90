package revocation

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// building is a snapshot arriving in parts: the new state grows here while
// the Set keeps serving the old one.
type building struct {
	seq             int64
	parts           int
	revoked, denied int // entries received
	st              state
}

func newBuilding(b SnapshotBegin) (*building, error) {
	if b.Seq < 0 {
		return nil, fmt.Errorf("revocation: a snapshot at sequence %d: sequence numbers are never negative; is the URL a mica feed?", b.Seq)
	}
	return &building{seq: b.Seq, st: newState(0, 0)}, nil
}

// add takes one part; it must be the next one of this snapshot.
func (b *building) add(p SnapshotPart) error {
	if p.Seq != b.seq {
		return fmt.Errorf("revocation: snapshot part %d is of the snapshot at sequence %d, inside the one at %d: the feed mixed two snapshots; reconnecting", p.Part, p.Seq, b.seq)
	}
	if p.Part != b.parts+1 {
		return fmt.Errorf("revocation: snapshot part %d arrived after part %d: parts must come in order; reconnecting", p.Part, b.parts)
	}
	if len(p.Revoked)+len(p.Denied) > PartEntries {
		return fmt.Errorf("revocation: snapshot part %d holds %d entries, more than a part may (%d); reconnecting", p.Part, len(p.Revoked)+len(p.Denied), PartEntries)
	}
	for _, e := range p.Revoked {
		if e.Serial == "" {
			return fmt.Errorf("revocation: snapshot part %d lists a revoked certificate without a serial; reconnecting", p.Part)
		}
		b.st.revoked[e.Serial] = e
	}
	for _, id := range p.Denied {
		b.st.deny(id)
	}
	b.parts++
	b.revoked += len(p.Revoked)
	b.denied += len(p.Denied)
	return nil
}

// end checks the snapshot arrived whole.
func (b *building) end(e SnapshotEnd) (SnapshotInfo, error) {
	info := SnapshotInfo{Seq: b.seq, Revoked: b.revoked, Denied: b.denied, Parts: b.parts}
	switch {
	case e.Seq != b.seq:
		return info, fmt.Errorf("revocation: the end of the snapshot at sequence %d closes the one at %d: the feed mixed two snapshots; the set is unchanged, reconnecting", e.Seq, b.seq)
	case e.Parts != b.parts || e.Revoked != b.revoked || e.Denied != b.denied:
		return info, fmt.Errorf("revocation: the snapshot at sequence %d ended saying %d parts, %d revoked and %d denied, but %d parts, %d revoked and %d denied arrived: incomplete; the set is unchanged, reconnecting",
			b.seq, e.Parts, e.Revoked, e.Denied, b.parts, b.revoked, b.denied)
	}
	return info, nil
}

// legacySnapshotBytes bounds the data of a snapshot sent as one event, by
// a server that predates parts (as this package always allowed).
const legacySnapshotBytes = 1 << 30

// LineTooLongError is a line of the feed longer than a subscriber reads.
type LineTooLongError struct {
	Limit int
	Event string // the event the line belonged to, if it said
}

func (e *LineTooLongError) Error() string {
	return fmt.Sprintf("revocation: the feed sent a line of more than %d bytes (event %q); a mica feed keeps every line of a snapshot sent in parts under %d bytes: check the feed URL, or the server's version", e.Limit, e.Event, MaxLineBytes)
}

// lineReader reads the lines of a server-sent event stream, refusing one
// longer than its limit instead of holding it.
type lineReader struct {
	r   *bufio.Reader
	buf []byte
}

func newLineReader(r io.Reader) *lineReader { return &lineReader{r: bufio.NewReaderSize(r, 64<<10)} }

// next returns the next line without its end of line (LF or CRLF); the
// line is valid until the next call.
func (l *lineReader) next(limit int, event string) ([]byte, error) {
	if cap(l.buf) > 2*MaxLineBytes {
		l.buf = nil // a one-event snapshot's line: do not keep it
	}
	l.buf = l.buf[:0]
	for {
		chunk, err := l.r.ReadSlice('\n')
		if len(l.buf)+len(chunk) > limit+2 { // room for CRLF
			return nil, &LineTooLongError{Limit: limit, Event: event}
		}
		l.buf = append(l.buf, chunk...)
		switch {
		case err == nil:
			line := l.buf[:len(l.buf)-1]
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			if len(line) > limit {
				return nil, &LineTooLongError{Limit: limit, Event: event}
			}
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
		default:
			return nil, err
		}
	}
}
