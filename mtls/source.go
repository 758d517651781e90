package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
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

// FileSource reads the credential and bundle the mica agent writes into a
// directory, and reloads them when they change. A reload that finds a
// half-written set or a key that does not match the certificate keeps the
// previous credential (and says so in the log and in Reload's error);
// the agent writes the key last, so the next poll after it finishes picks
// up the complete set.
type FileSource struct {
	dir      string
	names    FileNames
	interval time.Duration
	log      *slog.Logger

	state atomic.Pointer[fileState]

	mu      sync.Mutex // serialises reloads
	seen    [4]fileStamp
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
		names:    FileNames{Cert: "cert.pem", Chain: "chain.pem", Key: "key.pem", Bundle: "bundle.pem"},
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

func (s *FileSource) stamps() [4]fileStamp {
	var out [4]fileStamp
	for i, p := range s.files() {
		if fi, err := os.Stat(p); err == nil {
			out[i] = fileStamp{mod: fi.ModTime(), size: fi.Size(), ok: true}
		}
	}
	return out
}

func (s *FileSource) reloadLocked(stamps [4]fileStamp) error {
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
	p := s.files()
	certPEM, err := os.ReadFile(p[0])
	if err != nil {
		return nil, fmt.Errorf("mtls: reading the certificate: %w", err)
	}
	chainPEM, err := os.ReadFile(p[1])
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("mtls: reading the chain: %w", err)
	}
	keyPEM, err := os.ReadFile(p[2])
	if err != nil {
		return nil, fmt.Errorf("mtls: reading the key: %w", err)
	}
	bundlePEM, err := os.ReadFile(p[3])
	if err != nil {
		return nil, fmt.Errorf("mtls: reading the trust bundle: %w", err)
	}
	full := append(append(append([]byte{}, certPEM...), '\n'), chainPEM...)
	cert, err := tls.X509KeyPair(full, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("mtls: %s and %s do not make a credential (%w): if the agent is writing them, the next poll retries", p[0], p[2], err)
	}
	roots, err := parsePEMCerts(bundlePEM)
	if err != nil {
		return nil, fmt.Errorf("mtls: the trust bundle %s: %w", p[3], err)
	}
	return &fileState{cert: &cert, roots: roots}, nil
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

func parsePEMCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate in it")
	}
	return out, nil
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
