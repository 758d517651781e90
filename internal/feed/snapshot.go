package feed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/mica-pki/mica/revocation"
)

// writeSnapshot streams the state to one subscriber, labelled with the
// sequence number at, a few shards at a time (see the package comment):
// in parts when it asked for them (chunked), else as the one "snapshot"
// event a subscriber that predates parts reads, written in pieces. write
// writes and flushes bytes; change says they end something the subscriber
// applies.
func (h *Hub) writeSnapshot(ctx context.Context, at int64, chunked bool, write func(b []byte, change bool) error) error {
	partEntries := int(h.partEntries.Load())
	var enc snapshotEncoder = &legacyEncoder{write: write}
	if chunked {
		enc = &partEncoder{write: write, max: partEntries, afterPart: h.afterPart.Load()}
	}
	if err := enc.begin(at); err != nil {
		return err
	}
	var (
		c       snapshotCursor
		revoked []revocation.Event
		denied  []string
	)
	for !c.done {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-h.done:
			return errors.New("feed: the server is stopping")
		default:
		}
		revoked, denied = h.take(&c, partEntries, revoked[:0], denied[:0])
		for _, e := range revoked {
			data, err := json.Marshal(e)
			if err != nil {
				return err
			}
			if err := enc.add(false, data); err != nil {
				return err
			}
		}
		for _, id := range denied {
			data, err := json.Marshal(id)
			if err != nil {
				return err
			}
			if err := enc.add(true, data); err != nil {
				return err
			}
		}
	}
	return enc.end()
}

// snapshotEncoder writes a snapshot's entries, marshalled one at a time,
// revoked certificates first, so that the stream never holds more than a
// part of it.
type snapshotEncoder interface {
	begin(seq int64) error
	add(denied bool, entry []byte) error
	end() error
}

// partEncoder writes snapshot-begin, parts of at most max entries (and
// about revocation.PartBytes), and snapshot-end.
type partEncoder struct {
	write     func([]byte, bool) error
	max       int
	afterPart *func(part int)

	seq             int64
	part            int
	revoked, denied int    // entries written
	buf             []byte // the part being filled
	n               int    // entries in buf
	open            string // the JSON array open in buf
}

func (p *partEncoder) begin(seq int64) error {
	p.seq = seq
	return p.write(fmt.Appendf(nil, "event: %s\ndata: {\"snapshot_seq\":%d}\n\n", revocation.EventSnapshotBegin, seq), false)
}

func (p *partEncoder) add(denied bool, entry []byte) error {
	if p.n > 0 && (p.n >= p.max || len(p.buf)+len(entry) > revocation.PartBytes) {
		if err := p.flush(); err != nil {
			return err
		}
	}
	if p.n == 0 {
		p.part++
		p.buf = fmt.Appendf(p.buf[:0], "event: %s\ndata: {\"snapshot_seq\":%d,\"part\":%d", revocation.EventSnapshotPart, p.seq, p.part)
		p.open = ""
	}
	field := "revoked"
	if denied {
		field = "denied"
		p.denied++
	} else {
		p.revoked++
	}
	switch {
	case p.open == field:
		p.buf = append(p.buf, ',')
	case p.open != "":
		p.buf = fmt.Appendf(p.buf, "],%q:[", field)
	default:
		p.buf = fmt.Appendf(p.buf, ",%q:[", field)
	}
	p.open = field
	p.buf = append(p.buf, entry...)
	p.n++
	return nil
}

func (p *partEncoder) flush() error {
	if p.n == 0 {
		return nil
	}
	p.buf = append(p.buf, "]}\n\n"...)
	p.n = 0
	if err := p.write(p.buf, false); err != nil {
		return err
	}
	if p.afterPart != nil {
		(*p.afterPart)(p.part)
	}
	return nil
}

func (p *partEncoder) end() error {
	if err := p.flush(); err != nil {
		return err
	}
	return p.write(fmt.Appendf(nil, "event: %s\nid: %d\ndata: {\"snapshot_seq\":%d,\"parts\":%d,\"revoked\":%d,\"denied\":%d}\n\n",
		revocation.EventSnapshotEnd, p.seq, p.seq, p.part, p.revoked, p.denied), true)
}

// legacyEncoder writes the snapshot as one "snapshot" event, the JSON of
// revocation.Snapshot on one data line, in pieces of about
// revocation.PartBytes.
type legacyEncoder struct {
	write  func([]byte, bool) error
	buf    []byte
	first  bool // no entry yet in the open array
	denied bool // the denied array is open
}

func (l *legacyEncoder) begin(seq int64) error {
	l.buf = fmt.Appendf(l.buf[:0], "event: snapshot\nid: %d\ndata: {\"seq\":%d,\"revoked\":[", seq, seq)
	l.first = true
	return nil
}

func (l *legacyEncoder) add(denied bool, entry []byte) error {
	if denied && !l.denied {
		l.openDenied()
	}
	if !l.first {
		l.buf = append(l.buf, ',')
	}
	l.first = false
	l.buf = append(l.buf, entry...)
	if len(l.buf) >= revocation.PartBytes {
		err := l.write(l.buf, false)
		l.buf = l.buf[:0]
		return err
	}
	return nil
}

func (l *legacyEncoder) openDenied() {
	l.buf = append(l.buf, `],"denied":[`...)
	l.denied, l.first = true, true
}

func (l *legacyEncoder) end() error {
	if !l.denied {
		l.openDenied()
	}
	l.buf = append(l.buf, "]}\n\n"...)
	return l.write(l.buf, true)
}
