// Package filescan finds certificates in files: PEM (certificates, bundles,
// private keys, encrypted PKCS#8 keys), DER, PKCS#12 and Java keystores
// (JKS), the last three opened with a list of passphrases. It matches
// certificates to the private key files found in the same walk, by public
// key, and says whether every local user can read that key. Key material
// is read only to compute its public key and is never kept or reported.
//
// Start with [Scan].
package filescan

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	keystore "github.com/pavlo-v-chernykh/keystore-go/v4"
	"github.com/youmark/pkcs8"
	pkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/mica-pki/mica/internal/discover"
)

// Format is how a certificate was stored.
type Format string

const (
	FormatPEM    Format = "pem"
	FormatDER    Format = "der"
	FormatPKCS12 Format = "pkcs12"
	FormatJKS    Format = "jks"
)

// Found is one certificate found in a file, with the chain stored next to
// it and the private key that matches it, if the walk found one.
type Found struct {
	Path string
	// Entry names the certificate within a file that holds several (a
	// keystore alias, or 1, 2, … for leaves of one PEM bundle); empty
	// otherwise.
	Entry  string
	Format Format
	Chain  []*x509.Certificate
	// Key is the private key file that matches the leaf: a key file, or the
	// keystore that holds both.
	Key *discover.Key
}

// Problem is a file that looked like it held certificates but could not be
// read: a keystore none of the passphrases opens, a malformed PEM block.
type Problem struct {
	Path string
	Err  error
}

// Config tunes a scan. Every zero value is a safe default.
type Config struct {
	// Passphrases are tried, after the empty one, on PKCS#12 files, Java
	// keystores and encrypted PKCS#8 keys.
	Passphrases []string
	// MaxFileSize skips larger files; default 1 MiB (no certificate store
	// worth finding is larger, and every candidate is read whole).
	MaxFileSize int64
	// Exclude are directories not entered; default /proc, /sys, /dev and
	// /run.
	Exclude []string
	// IncludeCA also reports CA certificates that stand alone (trust
	// stores, CA bundles); by default only end-entity certificates, and
	// the CA certificates stored with them as their chain, are reported.
	IncludeCA bool
	// Problem, when set, is told of each problem file.
	Problem func(Problem)
}

// Stats count what a scan looked at.
type Stats struct {
	Files, Read, Certificates, Keys, Problems int
}

// DefaultExclude are the directories a scan never enters unless told
// otherwise: they hold devices and kernel state, not stores.
var DefaultExclude = []string{"/proc", "/sys", "/dev", "/run"}

// keyFile is a private key found in the walk, known by its public key.
type keyFile struct {
	path          string
	worldReadable bool
}

type scanner struct {
	cfg    Config
	stats  Stats
	keys   map[[32]byte]*keyFile // by SHA-256 of the public key's SPKI
	found  []Found
	opened map[string]bool // directories readable by everyone
}

// Scan walks roots and calls fn with every certificate found, once the
// walk has ended (keys are matched to certificates across the whole
// walk). Symbolic links are not followed. It stops when ctx ends or fn
// returns an error.
func Scan(ctx context.Context, roots []string, cfg Config, fn func(Found) error) (Stats, error) {
	if cfg.MaxFileSize <= 0 {
		cfg.MaxFileSize = 1 << 20
	}
	if cfg.Exclude == nil {
		cfg.Exclude = DefaultExclude
	}
	s := &scanner{cfg: cfg, keys: map[[32]byte]*keyFile{}, opened: map[string]bool{}}
	for _, root := range roots {
		abs, err := filepath.Abs(root)
		if err != nil {
			return s.stats, fmt.Errorf("filescan: %s: %w", root, err)
		}
		if _, err := os.Lstat(abs); err != nil {
			return s.stats, fmt.Errorf("filescan: %w: name a directory or file that exists", err)
		}
		err = filepath.WalkDir(abs, func(p string, d fs.DirEntry, err error) error {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return ctxErr
			}
			if err != nil {
				s.problem(p, err) // unreadable directory: go on with the rest
				if d != nil && d.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
			if d.IsDir() {
				if s.excluded(p) && p != abs {
					return fs.SkipDir
				}
				return nil
			}
			if !d.Type().IsRegular() {
				return nil
			}
			s.stats.Files++
			s.file(p)
			return nil
		})
		if err != nil {
			return s.stats, err
		}
	}
	for _, f := range s.found {
		if f.Key == nil {
			if k := s.keys[spkiHash(f.Chain[0].PublicKey)]; k != nil {
				f.Key = &discover.Key{Path: k.path, WorldReadable: k.worldReadable}
			}
		}
		if err := fn(f); err != nil {
			return s.stats, err
		}
	}
	return s.stats, nil
}

func (s *scanner) excluded(p string) bool {
	for _, e := range s.cfg.Exclude {
		if p == filepath.Clean(e) {
			return true
		}
	}
	return false
}

func (s *scanner) problem(path string, err error) {
	s.stats.Problems++
	if s.cfg.Problem != nil {
		s.cfg.Problem(Problem{Path: path, Err: err})
	}
}

// file reads one candidate file and records what it holds.
func (s *scanner) file(p string) {
	info, err := os.Stat(p)
	if err != nil || info.Size() > s.cfg.MaxFileSize || info.Size() == 0 {
		return
	}
	f, err := os.Open(p)
	if err != nil {
		return // unreadable files hold nothing this scan can report
	}
	data, err := io.ReadAll(io.LimitReader(f, s.cfg.MaxFileSize+1))
	f.Close()
	if err != nil || int64(len(data)) > s.cfg.MaxFileSize {
		return
	}
	s.stats.Read++
	worldReadable := s.worldReadable(p, info.Mode())
	switch {
	case bytes.Contains(data, []byte("-----BEGIN ")):
		s.pemFile(p, data, worldReadable)
	case bytes.HasPrefix(data, []byte{0xfe, 0xed, 0xfe, 0xed}):
		s.jksFile(p, data, worldReadable)
	case looksLikePKCS12(data):
		s.pkcs12File(p, data, worldReadable)
	case len(data) > 2 && data[0] == 0x30:
		if c, err := x509.ParseCertificate(data); err == nil {
			s.add(p, FormatDER, []*x509.Certificate{c}, nil)
		} else if k, err := x509.ParsePKCS8PrivateKey(data); err == nil {
			s.addKey(p, k, worldReadable)
		}
	}
}

// worldReadable reports whether every local user can read the file: it
// is readable by others and so is the way to it.
func (s *scanner) worldReadable(p string, mode fs.FileMode) bool {
	if mode.Perm()&0o004 == 0 {
		return false
	}
	for dir := filepath.Dir(p); ; dir = filepath.Dir(dir) {
		ok, seen := s.opened[dir]
		if !seen {
			info, err := os.Stat(dir)
			ok = err == nil && info.Mode().Perm()&0o001 != 0
			s.opened[dir] = ok
		}
		if !ok {
			return false
		}
		if dir == filepath.Dir(dir) {
			return true
		}
	}
}

func (s *scanner) pemFile(p string, data []byte, worldReadable bool) {
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		switch b.Type {
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				s.problem(p, fmt.Errorf("filescan: a CERTIFICATE block Go cannot parse: %w", err))
				continue
			}
			certs = append(certs, c)
		case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY":
			if k, err := parsePrivateKey(b); err == nil {
				s.addKey(p, k, worldReadable)
			}
		case "ENCRYPTED PRIVATE KEY":
			for _, pass := range s.passphrases() {
				if k, err := pkcs8.ParsePKCS8PrivateKey(b.Bytes, []byte(pass)); err == nil {
					s.addKey(p, k, worldReadable)
					break
				}
			}
		}
	}
	s.add(p, FormatPEM, certs, nil)
}

func parsePrivateKey(b *pem.Block) (any, error) {
	switch b.Type {
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(b.Bytes)
	}
	return x509.ParsePKCS8PrivateKey(b.Bytes)
}

// looksLikePKCS12 checks the start of a PFX: SEQUENCE { INTEGER 3, … }.
func looksLikePKCS12(data []byte) bool {
	if len(data) < 8 || data[0] != 0x30 {
		return false
	}
	i := 2
	if data[1]&0x80 != 0 {
		i += int(data[1] & 0x7f)
	}
	return i+3 <= len(data) && bytes.Equal(data[i:i+3], []byte{0x02, 0x01, 0x03})
}

func (s *scanner) passphrases() []string { return append([]string{""}, s.cfg.Passphrases...) }

func (s *scanner) pkcs12File(p string, data []byte, worldReadable bool) {
	var lastErr error
	for _, pass := range s.passphrases() {
		_, leaf, cas, err := pkcs12.DecodeChain(data, pass)
		if err == nil {
			s.stats.Keys++
			// The key is in the file, and the file opened with a known
			// passphrase: whoever can read the file has the key.
			s.add(p, FormatPKCS12, append([]*x509.Certificate{leaf}, cas...), &discover.Key{Path: p, WorldReadable: worldReadable})
			return
		}
		if certs, terr := pkcs12.DecodeTrustStore(data, pass); terr == nil {
			s.add(p, FormatPKCS12, certs, nil)
			return
		}
		lastErr = err
	}
	if errors.Is(lastErr, pkcs12.ErrIncorrectPassword) {
		lastErr = fmt.Errorf("none of the %d passphrases opens it: add its passphrase to the list", len(s.passphrases()))
	}
	s.problem(p, fmt.Errorf("filescan: PKCS#12 file: %w", lastErr))
}

func (s *scanner) jksFile(p string, data []byte, worldReadable bool) {
	for _, pass := range s.passphrases() {
		ks := keystore.New(keystore.WithCaseExactAliases(), keystore.WithOrderedAliases())
		if err := ks.Load(bytes.NewReader(data), []byte(pass)); err != nil {
			continue
		}
		for _, alias := range ks.Aliases() {
			var raw []keystore.Certificate
			var key *discover.Key
			if ks.IsPrivateKeyEntry(alias) {
				raw, _ = ks.GetPrivateKeyEntryCertificateChain(alias)
				key = &discover.Key{Path: p, WorldReadable: worldReadable}
				s.stats.Keys++
			} else if e, err := ks.GetTrustedCertificateEntry(alias); err == nil {
				raw = []keystore.Certificate{e.Certificate}
			}
			var chain []*x509.Certificate
			for _, c := range raw {
				if cert, err := x509.ParseCertificate(c.Content); err == nil {
					chain = append(chain, cert)
				}
			}
			s.addEntry(p, alias, FormatJKS, chain, key)
		}
		return
	}
	s.problem(p, fmt.Errorf("filescan: Java keystore: none of the %d passphrases opens it: add its passphrase to the list", len(s.passphrases())))
}

// add records the certificates of one file: each end-entity certificate
// with the file's CA certificates as its chain, or, with IncludeCA and no
// end-entity certificate, each CA certificate alone.
func (s *scanner) add(p string, format Format, certs []*x509.Certificate, key *discover.Key) {
	var leaves, cas []*x509.Certificate
	for _, c := range certs {
		if c.IsCA {
			cas = append(cas, c)
		} else {
			leaves = append(leaves, c)
		}
	}
	if len(leaves) == 0 {
		if !s.cfg.IncludeCA {
			return
		}
		for i, c := range cas {
			s.record(Found{Path: p, Entry: entryName(i, len(cas)), Format: format, Chain: []*x509.Certificate{c}})
		}
		return
	}
	for i, l := range leaves {
		s.record(Found{Path: p, Entry: entryName(i, len(leaves)), Format: format, Chain: append([]*x509.Certificate{l}, cas...), Key: key})
	}
}

// addEntry records one keystore entry under its alias.
func (s *scanner) addEntry(p, alias string, format Format, chain []*x509.Certificate, key *discover.Key) {
	if len(chain) == 0 || chain[0].IsCA && !s.cfg.IncludeCA {
		return
	}
	s.record(Found{Path: p, Entry: alias, Format: format, Chain: chain, Key: key})
}

func (s *scanner) record(f Found) {
	s.stats.Certificates++
	s.found = append(s.found, f)
}

func entryName(i, n int) string {
	if n == 1 {
		return ""
	}
	return strconv.Itoa(i + 1)
}

func (s *scanner) addKey(p string, k any, worldReadable bool) {
	signer, ok := k.(crypto.Signer)
	if !ok {
		return
	}
	s.stats.Keys++
	h := spkiHash(signer.Public())
	// Of several copies of one key, the one every user can read is the
	// one to report.
	if prev := s.keys[h]; prev == nil || worldReadable && !prev.worldReadable {
		s.keys[h] = &keyFile{path: p, worldReadable: worldReadable}
	}
}

func spkiHash(pub any) [32]byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return [32]byte{}
	}
	return sha256.Sum256(der)
}

// Location is where f was seen, on host.
func (f Found) Location(host string) discover.Location {
	return discover.Location{Scheme: discover.SchemeFile, Host: host, Path: filepath.ToSlash(f.Path), Entry: f.Entry}
}

// ReadPassphrases reads a passphrase list: one per line, empty lines
// skipped, nothing trimmed but the line end (a passphrase may have
// spaces).
func ReadPassphrases(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("filescan: reading passphrases: %w", err)
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSuffix(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		out = append(out, line)
	}
	return out, nil
}
