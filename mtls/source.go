package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mica-pki/mica/credential"
)

// Source supplies this process's own credential and the trust anchors it
// verifies peers against; both may change at any time, and both are read
// on every handshake, so they must be cheap. A Source returns a new slice
// from Roots when the roots change and never modifies one it returned.
type Source interface {
	// Certificate is the leaf first, then intermediates, with the private
	// key; Leaf is set.
	Certificate() (*tls.Certificate, error)
	// Roots is the current trust bundle.
	Roots() []*x509.Certificate
}

// FileNames are the files a FileSource reads, relative to its directory
// unless absolute. The defaults are the names the mica agent and `mica cert
// issue` write.
type FileNames struct {
	Cert   string // the leaf (default cert.pem); may hold the intermediates too
	Chain  string // the intermediates (default chain.pem); may be absent
	Key    string // the private key (default key.pem)
	Bundle string // the trust bundle's roots (default bundle.pem)
}

var defaultFileNames = FileNames{Cert: credential.CertFile, Chain: credential.ChainFile, Key: credential.KeyFile, Bundle: credential.BundleFile}

// FileOption changes a FileSource.
type FileOption func(*FileSource)

// WithPollInterval sets how often the files are checked for changes
// (modification time and size); default one second. Zero or less turns
// polling off: only Reload reads them again.
func WithPollInterval(d time.Duration) FileOption {
	return func(s *FileSource) { s.interval = d }
}

// WithFileNames overrides the file names; empty fields keep their default.
func WithFileNames(n FileNames) FileOption {
	return func(s *FileSource) {
		for _, f := range []struct {
			dst *string
			v   string
		}{
			{&s.names.Cert, n.Cert}, {&s.names.Chain, n.Chain}, {&s.names.Key, n.Key}, {&s.names.Bundle, n.Bundle},
		} {
			if f.v != "" {
				*f.dst = f.v
			}
		}
	}
}

// WithLogger sets where reloads and failed reloads are reported.
func WithLogger(l *slog.Logger) FileOption {
	return func(s *FileSource) { s.log = l }
}

// FileSource reads the credential and bundle the mica agent (or `mica cert
// issue`) writes into a directory, and reloads them when they change. With
// the default names it reads through package credential, which switches
// the files together, so it never sees a new certificate with an old key.
// With other names (or a directory of plain files from an older mica) the
// files are read one by one, and a reload that finds a half-written set or
// a key that does not match the certificate keeps the previous credential
// (and says so in the log and in Reload's error); the next poll retries.
type FileSource struct {
	dir      string
	names    FileNames
	interval time.Duration
	log      *slog.Logger

	state atomic.Pointer[fileState]

	mu      sync.Mutex // serialises reloads
	seen    [5]fileStamp
	lastErr string

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

type fileState struct {
	cert  *tls.Certificate
	roots []*x509.Certificate
}

type fileStamp struct {
	mod  time.Time
	size int64
	ok   bool
}

// NewFileSource loads the credential in dir and starts watching it. It
// fails when the files are missing, unreadable or do not match.
func NewFileSource(dir string, opts ...FileOption) (*FileSource, error) {
	s := &FileSource{
		dir:      dir,
		names:    defaultFileNames,
		interval: time.Second,
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	if s.interval > 0 {
		go s.poll()
	} else {
		close(s.done)
	}
	return s, nil
}

// Certificate returns the current credential.
func (s *FileSource) Certificate() (*tls.Certificate, error) {
	return s.state.Load().cert, nil
}

// Roots returns the current trust bundle.
func (s *FileSource) Roots() []*x509.Certificate {
	return s.state.Load().roots
}

// Close stops watching the files; the last credential stays usable.
func (s *FileSource) Close() error {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	return nil
}

func (s *FileSource) path(name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(s.dir, name)
}

func (s *FileSource) files() [4]string {
	return [4]string{s.path(s.names.Cert), s.path(s.names.Chain), s.path(s.names.Key), s.path(s.names.Bundle)}
}

// Reload reads the files now. On error the previous credential stays in
// use.
func (s *FileSource) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reloadLocked(s.stamps())
}

// stamps are the files' modification times and sizes (through their links),
// and last the ..data link's own, whose rename switches a credential
// directory.
func (s *FileSource) stamps() [5]fileStamp {
	var out [5]fileStamp
	for i, p := range s.files() {
		if fi, err := os.Stat(p); err == nil {
			out[i] = fileStamp{mod: fi.ModTime(), size: fi.Size(), ok: true}
		}
	}
	if fi, err := os.Lstat(filepath.Join(s.dir, credential.DataLink)); err == nil {
		out[4] = fileStamp{mod: fi.ModTime(), size: fi.Size(), ok: true}
	}
	return out
}

func (s *FileSource) reloadLocked(stamps [5]fileStamp) error {
	st, err := s.load()
	if err != nil {
		if msg := err.Error(); msg != s.lastErr {
			s.lastErr = msg
			s.log.Warn("mtls: keeping the previous credential", slog.String("dir", s.dir), slog.String("error", msg))
		}
		return err
	}
	prev := s.state.Load()
	if prev != nil && !sameCredential(prev, st) {
		s.log.Info("mtls: credential reloaded", slog.String("dir", s.dir),
			slog.String("serial", st.cert.Leaf.SerialNumber.Text(16)), slog.Time("not_after", st.cert.Leaf.NotAfter),
			slog.Int("roots", len(st.roots)))
	}
	if prev != nil && sameRoots(prev.roots, st.roots) {
		// Keep the old slice so the verifiers' pool caches hit on the
		// pointer.
		st.roots = prev.roots
	}
	s.state.Store(st)
	s.seen, s.lastErr = stamps, ""
	return nil
}

func (s *FileSource) load() (*fileState, error) {
	var c *credential.Credential
	var err error
	if s.names == defaultFileNames {
		c, err = credential.Dir{Path: s.dir}.Load()
	} else {
		p := s.files()
		c, err = credential.Files{Cert: p[0], Chain: p[1], Key: p[2], Bundle: p[3]}.Read()
	}
	switch {
	case errors.Is(err, credential.ErrMismatch):
		return nil, fmt.Errorf("mtls: %w: if the agent is writing them, the next poll retries", err)
	case err != nil:
		return nil, fmt.Errorf("mtls: reading the credential in %s: %w", s.dir, err)
	case len(c.Roots) == 0:
		return nil, fmt.Errorf("mtls: %s holds no trust bundle (%s): peers cannot be verified without one", s.dir, s.path(s.names.Bundle))
	}
	return &fileState{cert: c.TLSCertificate(), roots: c.Roots}, nil
}

func (s *FileSource) poll() {
	defer close(s.done)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		s.mu.Lock()
		if stamps := s.stamps(); stamps != s.seen {
			_ = s.reloadLocked(stamps) // logged there; the old credential stays
		}
		s.mu.Unlock()
	}
}

func sameCredential(a, b *fileState) bool {
	if len(a.cert.Certificate) != len(b.cert.Certificate) || !sameRoots(a.roots, b.roots) {
		return false
	}
	for i := range a.cert.Certificate {
		if string(a.cert.Certificate[i]) != string(b.cert.Certificate[i]) {
			return false
		}
	}
	return true
}

func sameRoots(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}
