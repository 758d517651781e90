package crl

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// Source numbers each new CRL and streams the revoked, unexpired
// certificates it lists (store.Store.NumberCRL): numbers kept in the
// database grow across restarts and replicas, and a larger number never
// lists fewer revocations.
type Source interface {
	NumberCRL(ctx context.Context, issuer string, thisUpdate time.Time, fn func(store.Revoked) error) (store.CRLNumber, error)
}

// Config wires a Service for one issuing CA.
type Config struct {
	Source Source
	Issuer *x509.Certificate
	Signer Signer
	// IssuerID is how the store names the issuer (its certificate's SHA-256
	// fingerprint, hex).
	IssuerID string
	// Validity is nextUpdate − thisUpdate; default 24h. A new CRL is made
	// after half of it at the latest, so relying parties that fetch on
	// nextUpdate never hold an expired one.
	Validity time.Duration
	// Debounce is how long a change waits for more before the CRL is
	// rebuilt, so a burst of revocations costs one build; default 200ms.
	Debounce time.Duration
	// Lint, when set, checks every CRL of up to LintMaxEntries entries
	// before it is published; a CRL that fails is not served (the previous
	// one stays).
	Lint func(der []byte) error
	// LintMaxEntries bounds the CRLs that Lint sees; default
	// DefaultLintMaxEntries. Beyond it the linter's parse of the whole
	// list costs more than a rebuild, while the encoder's own tests lint
	// its output at every size that matters.
	LintMaxEntries int
	Clock          func() time.Time
	Logger         *slog.Logger
}

// DefaultLintMaxEntries is the largest CRL linted before publication
// unless Config says otherwise.
const DefaultLintMaxEntries = 100_000

// Published is one signed CRL.
type Published struct {
	DER        []byte
	Number     *big.Int
	ThisUpdate time.Time
	NextUpdate time.Time
	Entries    int
	// ETag is derived from DER, so it changes whenever the content does.
	ETag string
	// SharesSecond is set when another CRL of the issuer, by any server,
	// was dated in the same second or later before this one. HTTP dates
	// have whole seconds and cannot tell the two apart, so
	// If-Modified-Since is then never answered 304 (If-None-Match still
	// is), and Run replaces the CRL by one in a second of its own soon.
	SharesSecond bool
	// clockBehind: the other CRL was dated in a later second (this
	// server's clock is behind); a rebuild in a second would not help.
	clockBehind bool
}

// Service keeps the issuer's current CRL and regenerates it. Its methods
// are safe for concurrent use; Run drives it.
type Service struct {
	cfg     Config
	current atomic.Pointer[Published]
	poke    chan struct{}
}

// New checks cfg and returns a Service with no CRL yet: call RunOnce or Run.
func New(cfg Config) (*Service, error) {
	if cfg.Source == nil || cfg.Issuer == nil || cfg.Signer == nil || cfg.IssuerID == "" {
		return nil, errors.New("crl: Config needs Source, Issuer, Signer and IssuerID")
	}
	if cfg.Validity <= 0 {
		cfg.Validity = 24 * time.Hour
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = 200 * time.Millisecond
	}
	if cfg.LintMaxEntries <= 0 {
		cfg.LintMaxEntries = DefaultLintMaxEntries
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if _, err := signatureAlgorithm(cfg.Signer.Public()); err != nil {
		return nil, err
	}
	return &Service{cfg: cfg, poke: make(chan struct{}, 1)}, nil
}

// Path is where an issuer's CRL is served, named by its subject key
// identifier so that each CA generation has its own.
func Path(issuer *x509.Certificate) string {
	return "/crl/" + hex.EncodeToString(issuer.SubjectKeyId) + ".crl"
}

// Changed says the revocations changed; the CRL is rebuilt after the
// debounce. It never blocks.
func (s *Service) Changed() {
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// Current is the CRL being served, nil before the first build.
func (s *Service) Current() *Published { return s.current.Load() }

// RunOnce builds, signs, lints and publishes a new CRL.
func (s *Service) RunOnce(ctx context.Context) error {
	now := s.cfg.Clock().UTC().Truncate(time.Second)
	// The CRL number and the entries come from the store together (see
	// Source). Entries are collected first (about 40 bytes each) so that
	// the database read is not held open while signing, and so that an
	// error halfway leaves the old CRL in place; its number is then spent.
	var entries []Entry
	n, err := s.cfg.Source.NumberCRL(ctx, s.cfg.IssuerID, now, func(r store.Revoked) error {
		serial, err := serialBytes(r.Serial)
		if err != nil {
			return err
		}
		entries = append(entries, Entry{Serial: serial, RevokedAt: r.RevokedAt, Reason: r.Reason})
		return nil
	})
	if err != nil {
		return fmt.Errorf("crl: reading revocations: %w", err)
	}
	number := big.NewInt(n.Number)
	next := now.Add(s.cfg.Validity)
	if next.After(s.cfg.Issuer.NotAfter) {
		next = s.cfg.Issuer.NotAfter
	}
	der, err := Build(Params{Issuer: s.cfg.Issuer, Signer: s.cfg.Signer, Number: number, ThisUpdate: now, NextUpdate: next, Entries: len(entries)},
		func(yield func(Entry) bool) {
			for _, e := range entries {
				if !yield(e) {
					return
				}
			}
		})
	if err != nil {
		return err
	}
	if s.cfg.Lint != nil && len(entries) <= s.cfg.LintMaxEntries {
		if err := s.cfg.Lint(der); err != nil {
			return fmt.Errorf("crl: the new CRL fails lint and is not published: %w", err)
		}
	}
	sum := sha256.Sum256(der)
	s.current.Store(&Published{DER: der, Number: number, ThisUpdate: now, NextUpdate: next, Entries: len(entries),
		ETag:         `"` + hex.EncodeToString(sum[:16]) + `"`,
		SharesSecond: !n.PreviousThisUpdate.Before(now), clockBehind: n.PreviousThisUpdate.After(now)})
	s.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "crl published", slog.Int("entries", len(entries)),
		slog.String("number", number.String()), slog.Int("bytes", len(der)))
	return nil
}

// Run builds the CRL now (unless RunOnce built one already), then again
// after each change (debounced) and before half its validity has passed,
// until ctx ends. A failed build is
// logged and retried; the previous CRL keeps being served meanwhile.
func (s *Service) Run(ctx context.Context) error {
	retry := time.Duration(0)
	// A CRL built just before Run (the server builds one before it
	// serves) is not built again at once: at a million certificates a
	// build is seconds of CPU that start-up has better uses for.
	build := s.current.Load() == nil
	for {
		if !build {
			build = true
		} else if err := s.RunOnce(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.cfg.Logger.LogAttrs(ctx, slog.LevelError, "crl build failed", slog.String("error", err.Error()))
			retry = min(max(2*retry, time.Second), time.Minute)
		} else {
			retry = 0
		}
		wait := s.nextWait(s.current.Load(), s.cfg.Clock())
		if retry > 0 {
			wait = min(wait, retry)
		}
		timer := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		case <-s.poke:
			timer.Stop()
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(s.cfg.Debounce):
			}
			// The build about to start reads every change made so far,
			// those poked during the debounce included.
			select {
			case <-s.poke:
			default:
			}
		}
	}
}

// nextWait is how long Run waits for the next scheduled build: until half
// of cur's validity, or, for a CRL that shares its second with another,
// until the next second, so that clients revalidating by date soon get
// 304s again.
func (s *Service) nextWait(cur *Published, now time.Time) time.Duration {
	if cur == nil {
		return s.cfg.Validity / 2
	}
	wait := cur.ThisUpdate.Add(s.cfg.Validity / 2).Sub(now)
	if cur.SharesSecond && !cur.clockBehind {
		wait = min(wait, cur.ThisUpdate.Add(time.Second).Sub(now))
	}
	return wait
}

func serialBytes(hexSerial string) ([]byte, error) {
	if len(hexSerial)%2 == 1 {
		hexSerial = "0" + hexSerial
	}
	b, err := hex.DecodeString(hexSerial)
	if err != nil {
		return nil, fmt.Errorf("crl: serial %q in the store is not hex: %w", hexSerial, err)
	}
	return b, nil
}

// Handler serves the current CRL (DER, application/pkix-crl) at Path with
// ETag and Last-Modified, so relying parties and caches fetch it only when
// it changed. It is public: a CRL is signed and says nothing secret.
func (s *Service) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "crl: only GET and HEAD", http.StatusMethodNotAllowed)
			return
		}
		cur := s.current.Load()
		if cur == nil {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "crl: the first CRL is still being built; retry in a second", http.StatusServiceUnavailable)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/pkix-crl")
		h.Set("ETag", cur.ETag)
		// Caches may keep it until the next scheduled rebuild at most; a
		// revocation in between reaches relying parties through OCSP and
		// the push feed.
		maxAge := max(int(cur.ThisUpdate.Add(s.cfg.Validity/2).Sub(s.cfg.Clock()).Seconds()), 0)
		h.Set("Cache-Control", "public, max-age="+strconv.Itoa(min(maxAge, 300)))
		h.Set("Expires", cur.NextUpdate.UTC().Format(http.TimeFormat))
		h.Set("Last-Modified", cur.ThisUpdate.UTC().Format(http.TimeFormat))
		// ServeContent handles If-None-Match, If-Modified-Since and Range;
		// given no time, it leaves If-Modified-Since unanswered.
		modTime := cur.ThisUpdate
		if cur.SharesSecond {
			modTime = time.Time{}
		}
		http.ServeContent(w, r, "", modTime, bytes.NewReader(cur.DER))
	})
}
