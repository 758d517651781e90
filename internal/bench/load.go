package bench

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mica-pki/mica/internal/store"
)

// LoadConfig says what Load writes: a fleet the size of a large
// deployment, as mica would have recorded it.
type LoadConfig struct {
	// Live is how many live certificates (active, unexpired) to write, and
	// Revoked how many revoked, unexpired ones on top.
	Live, Revoked int
	// Issuer and Signer sign every certificate, so that each row carries
	// real DER of a realistic size; IssuerID is how the store names the
	// issuer (authority.Fingerprint of its DER).
	Issuer   *x509.Certificate
	Signer   crypto.Signer
	IssuerID string
	// TrustDomain names the SPIFFE IDs.
	TrustDomain string
	// Now is the time the fleet is seen at; lifetimes are spread around it.
	Now time.Time
	// Checkpoint, when set, is called after about every CheckpointEvery
	// audit leaves (default 1000), to sign a checkpoint as a running
	// server would (auditlog.Log.RunOnce).
	Checkpoint      func(ctx context.Context) error
	CheckpointEvery int
	// Workers is how many issuances are in flight (default 128): the
	// store's group commit writes them many to a transaction.
	Workers int
	// Seed makes the fleet reproducible.
	Seed uint64
	// Progress, when set, is told how many certificates are written so far.
	Progress func(done int)
}

// LoadResult is what Load wrote.
type LoadResult struct {
	Live, Revoked, Identities int
	// Leaves is the number of audit leaves written: one per issuance and
	// one per revocation.
	Leaves  int
	Seconds float64
}

// profileShape is one profile of the generated fleet: its share, the
// lifetime of its certificates and the names they carry.
type profileShape struct {
	name     string
	share    int // of 100
	lifetime time.Duration
	dns, ip  bool
	acme     bool // owned by ACME accounts rather than admins
}

// fleet is the mix Load writes: mostly short-lived workload certificates
// renewed by agents, some web and database certificates with DNS names
// and addresses, a few long-lived edge ones from ACME.
var fleet = []profileShape{
	{name: "service", share: 40, lifetime: 24 * time.Hour},
	{name: "mesh", share: 20, lifetime: 24 * time.Hour},
	{name: "batch", share: 5, lifetime: time.Hour},
	{name: "web", share: 15, lifetime: 7 * 24 * time.Hour, dns: true},
	{name: "db", share: 10, lifetime: 30 * 24 * time.Hour, dns: true, ip: true},
	{name: "edge", share: 10, lifetime: 90 * 24 * time.Hour, dns: true, ip: true, acme: true},
}

const (
	teams        = 300 // namespaces, each owned by one admin
	admins       = 40
	acmeAccounts = 25
)

// planned is one certificate to write.
type planned struct {
	identity, owner string
	shape           *profileShape
	sans            []string
	uris            []*url.URL
	dns             []string
	ips             []net.IP
	notBefore       time.Time
	renewedFrom     string // serial of the predecessor, set when written
	revoke          bool
}

// Load writes cfg.Live live and cfg.Revoked revoked certificates into st
// through its ordinary write path (RecordIssuance and Revoke, group
// committed), each with its audit leaf. Every identity's latest
// certificate was issued within the first two thirds of its lifetime (an
// agent renews at two thirds); half of them still have their predecessor
// live, so the expiry report has superseded certificates to see through.
func Load(ctx context.Context, st store.Store, cfg LoadConfig) (LoadResult, error) {
	if cfg.Live < 0 || cfg.Revoked < 0 || cfg.Issuer == nil || cfg.Signer == nil || cfg.IssuerID == "" {
		return LoadResult{}, errors.New("bench: LoadConfig needs Issuer, Signer, IssuerID and non-negative counts")
	}
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = "example.org"
	}
	if cfg.Now.IsZero() {
		cfg.Now = time.Now()
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 128
	}
	if cfg.CheckpointEvery <= 0 {
		cfg.CheckpointEvery = 1000
	}
	started := time.Now()
	keys := make([]crypto.Signer, 16)
	for i := range keys {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return LoadResult{}, err
		}
		keys[i] = k
	}
	rng := mrand.New(mrand.NewPCG(cfg.Seed, 0x6d696361))
	// Chains are planned here, in one goroutine, and written by the
	// workers: each chain by one worker, oldest first, so that a renewal's
	// event comes after its predecessor's.
	chains := make(chan []planned, cfg.Workers)
	var res LoadResult
	go func() {
		defer close(chains)
		live := 0
		for n := 0; live < cfg.Live; n++ {
			chain := planChain(rng, &cfg, n, false)
			if len(chain) > cfg.Live-live {
				chain = chain[len(chain)-(cfg.Live-live):]
			}
			live += len(chain)
			res.Identities++
			select {
			case chains <- chain:
			case <-ctx.Done():
				return
			}
		}
		for n := range cfg.Revoked {
			chain := planChain(rng, &cfg, n, true)
			res.Identities++
			select {
			case chains <- chain[len(chain)-1:]:
			case <-ctx.Done():
				return
			}
		}
	}()
	var (
		written, leaves atomic.Int64
		nextCheckpoint  atomic.Int64
		cpMu            sync.Mutex
		errOnce         sync.Once
		firstErr        error
		wg              sync.WaitGroup
	)
	nextCheckpoint.Store(int64(cfg.CheckpointEvery))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	for w := range cfg.Workers {
		wg.Go(func() {
			for chain := range chains {
				prev := ""
				for i := range chain {
					p := &chain[i]
					p.renewedFrom = prev
					serial, err := write(ctx, st, &cfg, keys[w%len(keys)], p)
					if err != nil {
						fail(err)
						return
					}
					prev = serial
					leaf := int64(1)
					if p.revoke {
						leaf++ // and its revocation
					}
					n := leaves.Add(leaf)
					if d := written.Add(1); cfg.Progress != nil && d%10000 == 0 {
						cfg.Progress(int(d))
					}
					if cfg.Checkpoint != nil && n >= nextCheckpoint.Load() && cpMu.TryLock() {
						nextCheckpoint.Store(n + int64(cfg.CheckpointEvery))
						err := cfg.Checkpoint(ctx)
						cpMu.Unlock()
						if err != nil {
							fail(fmt.Errorf("bench: checkpoint: %w", err))
							return
						}
					}
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return res, firstErr
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if cfg.Checkpoint != nil {
		if err := cfg.Checkpoint(ctx); err != nil {
			return res, fmt.Errorf("bench: checkpoint: %w", err)
		}
	}
	res.Live, res.Revoked, res.Leaves = cfg.Live, cfg.Revoked, int(leaves.Load())
	res.Seconds = time.Since(started).Seconds()
	return res, nil
}

// planChain plans identity n's live certificates, oldest first: the latest,
// issued at a uniform age within two thirds of its lifetime, and its
// predecessor when that is still live. A revoked identity has one.
func planChain(rng *mrand.Rand, cfg *LoadConfig, n int, revoked bool) []planned {
	pick := rng.IntN(100)
	shape := &fleet[len(fleet)-1]
	for i := range fleet {
		if pick < fleet[i].share {
			shape = &fleet[i]
			break
		}
		pick -= fleet[i].share
	}
	team := rng.IntN(teams)
	owner := fmt.Sprintf("spiffe://%s/mica/admin/ops-%02d", cfg.TrustDomain, team%admins)
	if shape.acme {
		owner = fmt.Sprintf("acme:https://mica.%s/acme/account/%d", cfg.TrustDomain, team%acmeAccounts)
	}
	kind := "svc"
	if revoked {
		kind = "retired"
	}
	p := planned{identity: fmt.Sprintf("spiffe://%s/ns/team-%03d/sa/%s-%d", cfg.TrustDomain, team, kind, n), owner: owner, shape: shape, revoke: revoked}
	u, _ := url.Parse(p.identity)
	p.uris = []*url.URL{u}
	p.sans = []string{p.identity}
	if shape.dns {
		host := fmt.Sprintf("%s-%d.team-%03d.svc.internal", kind, n, team)
		p.dns = []string{host, fmt.Sprintf("%s-%d.%s", kind, n, cfg.TrustDomain)}
		p.sans = append(p.sans, p.dns...)
	}
	if shape.ip {
		ip := net.IPv4(10, byte(team), byte(n>>8), byte(n))
		p.ips = []net.IP{ip}
		p.sans = append(p.sans, ip.String())
	}
	life := shape.lifetime
	age := time.Duration(rng.Int64N(int64(life * 2 / 3)))
	latest := p
	latest.notBefore = cfg.Now.Add(-age)
	if revoked || age >= life/3 {
		return []planned{latest}
	}
	// Renewed less than a third of a lifetime ago: the predecessor,
	// issued two thirds of a lifetime earlier, has not expired yet.
	prev := p
	prev.notBefore = latest.notBefore.Add(-life * 2 / 3)
	return []planned{prev, latest}
}

// write signs and records one certificate (and revokes it when planned
// so), and returns its serial.
func write(ctx context.Context, st store.Store, cfg *LoadConfig, key crypto.Signer, p *planned) (string, error) {
	serialBytes := make([]byte, 16)
	rand.Read(serialBytes)
	serialBytes[0] &= 0x7f
	serial := new(big.Int).SetBytes(serialBytes)
	notAfter := p.notBefore.Add(p.shape.lifetime)
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{},
		NotBefore: p.notBefore, NotAfter: notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:        p.uris, DNSNames: p.dns, IPAddresses: p.ips,
		CRLDistributionPoints: []string{"http://mica." + cfg.TrustDomain + "/crl/issuer.crl"},
		OCSPServer:            []string{"http://mica." + cfg.TrustDomain + "/ocsp"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, cfg.Issuer, key.Public(), cfg.Signer)
	if err != nil {
		return "", fmt.Errorf("bench: sign a certificate: %w", err)
	}
	sum := sha256.Sum256(der)
	rec := store.Certificate{
		Serial: serial.Text(16), Fingerprint: hex.EncodeToString(sum[:]), Identity: p.identity, SANs: p.sans,
		Profile: p.shape.name, Requester: p.owner, Owner: p.owner, ChainStartedAt: p.notBefore,
		SourceAddr: "10.20.0.7", NotBefore: p.notBefore, NotAfter: notAfter, Issuer: cfg.IssuerID,
		RenewedFrom: p.renewedFrom, DER: der,
	}
	action := store.ActionCertIssued
	if p.renewedFrom != "" {
		action, rec.Requester = store.ActionCertRenewed, p.identity
	}
	iss := store.Issuance{Certificate: rec, Event: store.Event{
		Time: p.notBefore, Actor: rec.Requester, Source: rec.SourceAddr, Action: action, Serial: rec.Serial,
		Fingerprint: rec.Fingerprint, Identity: rec.Identity, Profile: rec.Profile, Outcome: "ok",
	}}
	if err := st.RecordIssuance(ctx, &iss); err != nil {
		return "", err
	}
	if p.revoke {
		at := p.notBefore.Add(cfg.Now.Sub(p.notBefore) / 2)
		ev := store.Event{Time: at, Actor: p.owner, Source: "10.20.0.9", Action: store.ActionCertRevoked, Serial: rec.Serial,
			Fingerprint: rec.Fingerprint, Identity: rec.Identity, Profile: rec.Profile, Outcome: "ok", Detail: "keyCompromise"}
		if err := st.Revoke(ctx, rec.Serial, 1, at, &ev); err != nil {
			return "", err
		}
	}
	return rec.Serial, nil
}
