package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net/http"
	"runtime"
	"runtime/metrics"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	xocsp "golang.org/x/crypto/ocsp"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/internal/api"
	"github.com/mica-pki/mica/internal/crl"
	"github.com/mica-pki/mica/internal/issuance"
	"github.com/mica-pki/mica/internal/store"
	"github.com/mica-pki/mica/revocation"
)

// Scale loads the fleet (unless the store holds it already), starts the
// server on it and measures every figure; see ScaleConfig.
func Scale(ctx context.Context, cfg ScaleConfig) (*ScaleResult, error) {
	res := &ScaleResult{Engine: cfg.Engine, Live: cfg.Load.Live, Revoked: cfg.Load.Revoked, LoadBefore: loadAverage1(),
		Note: "figures are from one run on a shared machine and are noisy: compare with a baseline measured in the same run; " +
			"the load average (1 min) is read when each figure is taken"}
	now := time.Now()
	live, err := cfg.Store.CountCertificates(ctx, store.Filter{Status: store.StatusActive, Now: now})
	if err != nil {
		return nil, err
	}
	switch {
	case live >= cfg.Load.Live:
		cfg.logf("the store already holds %d live certificates: measuring it as it is", live)
		res.Live = live
	case live > 1: // the admin credential and the server's own
		return nil, fmt.Errorf("bench: the store holds %d live certificates, fewer than %d: load into an empty data directory", live, cfg.Load.Live)
	default:
		cfg.logf("loading %d live and %d revoked certificates", cfg.Load.Live, cfg.Load.Revoked)
		lr, err := Load(ctx, cfg.Store, cfg.Load)
		if err != nil {
			return nil, err
		}
		res.Loaded = &lr
		res.add(Figure{Name: "load", Command: "bench.Load (store's group commit)", Target: "-", OK: true,
			Value: fmt.Sprintf("%d certificates, %d leaves in %.0f s", lr.Live+lr.Revoked, lr.Leaves, lr.Seconds)})
	}
	var expectLeaves int64
	if cp, err := cfg.Store.LatestCheckpoint(ctx); err == nil {
		expectLeaves = cp.Size
	}

	cfg.logf("starting the server")
	srvStart := time.Now()
	srv, err := startServer(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	c, err := cfg.Client(srv.api)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ready, err := waitReady(ctx, srv, c, expectLeaves)
	startup := time.Since(srvStart)
	rss, _ := srv.memory()
	f := Figure{Name: "server start-up", Command: "mica serve → serving, CRL built, audit tree loaded", Target: "< 5 s",
		Value: fmt.Sprintf("%.2f s (serving after %.2f s; RSS %s)", startup.Seconds(), srv.started.Seconds(), mib(rss)), OK: err == nil && startup < 5*time.Second}
	if err != nil {
		f.Note = err.Error()
	} else {
		f.Note = ready
	}
	res.add(f)

	measureStore(ctx, &cfg, res)
	measureReport(ctx, &cfg, srv, res)
	measureList(ctx, &cfg, srv, c, res)
	measureCRL(ctx, &cfg, res)
	measureOCSP(ctx, &cfg, srv, c, res)
	measureFeed(ctx, &cfg, srv, res)
	measureMetrics(ctx, srv, res)
	measureVerify(ctx, &cfg, srv, res)

	rss, peak := srv.memory()
	res.add(Figure{Name: "server memory", Command: "/proc/<mica serve>/status VmRSS, VmHWM after every figure", Target: "≤ 300 MiB",
		Value: fmt.Sprintf("RSS %s, peak %s", mib(rss), mib(peak)), OK: peak <= 300<<20})
	return res, nil
}

// waitReady waits until the server answers, serves its CRL and has its
// audit tree loaded up to leaves.
func waitReady(ctx context.Context, srv *serverProc, c *client.Client, leaves int64) (string, error) {
	deadline := time.Now().Add(5 * time.Minute)
	hc := &http.Client{Timeout: 10 * time.Second}
	var crlOK, auditOK, apiOK bool
	for time.Now().Before(deadline) {
		if !apiOK {
			_, err := c.ListCertificates(ctx, client.ListFilter{Limit: 1})
			apiOK = err == nil
		}
		if !crlOK && srv.metric != "" {
			// Present once the first CRL is built.
			_, crlOK = metricValue(ctx, hc, srv.metric, "mica_crl_entries")
		}
		if !auditOK && srv.metric != "" {
			if n, ok := metricValue(ctx, hc, srv.metric, "mica_audit_log_leaves"); ok && int64(n) >= leaves {
				auditOK = true
			}
		}
		if apiOK && crlOK && auditOK {
			return fmt.Sprintf("audit tree holds at least %d leaves", leaves), nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return "", fmt.Errorf("bench: not ready in 5 minutes (api %v, crl %v, audit tree %v)", apiOK, crlOK, auditOK)
}

func get(ctx context.Context, hc *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("%s answered %s", url, resp.Status)
	}
	return body, nil
}

// metricValue reads one unlabelled sample from a /metrics page.
func metricValue(ctx context.Context, hc *http.Client, base, name string) (float64, bool) {
	body, err := get(ctx, hc, base+"/metrics")
	if err != nil {
		return 0, false
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err == nil {
				return f, true
			}
		}
	}
	return 0, false
}

func measureReport(ctx context.Context, cfg *ScaleConfig, srv *serverProc, res *ScaleResult) {
	cfg.logf("mica report expiring")
	var ds []time.Duration
	var failure string
	for range 7 {
		d, _, err := runCLI(ctx, cfg, srv.api, "report", "expiring", "--within", "30d")
		if err != nil {
			failure = err.Error()
			break
		}
		ds = append(ds, d)
	}
	f := Figure{Name: "expiry report", Command: "mica report expiring --within 30d (end to end, its own process, 7 runs)", Target: "< 1 s (p50)"}
	if failure != "" {
		f.Value, f.Note = "failed", failure
	} else {
		slices.Sort(ds)
		f.Value = fmt.Sprintf("p50 %.0f ms, max %.0f ms", Ms(Percentile(ds, 0.5)), Ms(ds[len(ds)-1]))
		f.OK = Percentile(ds, 0.5) < time.Second
	}
	res.add(f)
}

// measureStore times the inventory's heavy queries straight on the store,
// each under the store's own deadline (store.DefaultTimeout): what the
// server's report, gauges, expiry notices and CRL builder wait for.
func measureStore(ctx context.Context, cfg *ScaleConfig, res *ScaleResult) {
	cfg.logf("store queries")
	now := time.Now()
	notices, _ := cfg.Store.(store.ExpiryNoticeStore)
	queries := []struct {
		name string
		run  func(ctx context.Context) error
	}{
		{"expiry report (30d, limit 1000)", func(ctx context.Context) error {
			_, err := cfg.Store.ExpiringReport(ctx, store.ExpiringFilter{Now: now, Before: now.Add(30 * 24 * time.Hour), Limit: 1000})
			return err
		}},
		{"inventory gauges (certificates by expiry)", func(ctx context.Context) error {
			_, err := cfg.Store.CertificatesByExpiry(ctx, now)
			return err
		}},
		{"expiry notices (7d, limit 100)", func(ctx context.Context) error {
			if notices == nil {
				return errors.New("the store keeps no expiry notices")
			}
			_, err := notices.ExpiringWithoutNotice(ctx, store.NoticeFilter{Now: now, Within: 7 * 24 * time.Hour, LifeDivisor: 3, Limit: 100})
			return err
		}},
		{"revoked list (every issuer)", func(ctx context.Context) error {
			return cfg.Store.RevokedCertificates(ctx, "", now, func(store.Revoked) error { return nil })
		}},
		{"count active", func(ctx context.Context) error {
			_, err := cfg.Store.CountCertificates(ctx, store.Filter{Status: store.StatusActive, Now: now})
			return err
		}},
	}
	const runs = 20
	for _, q := range queries {
		var ds []time.Duration
		var failure error
		for range runs {
			qctx, cancel := context.WithTimeout(ctx, store.DefaultTimeout)
			t0 := time.Now()
			err := q.run(qctx)
			ds = append(ds, time.Since(t0))
			cancel()
			if err != nil {
				failure = err
				break
			}
		}
		f := Figure{Name: "store: " + q.name, Command: fmt.Sprintf("store call in this process, %d runs", runs), Target: "< 5 s (store.DefaultTimeout)"}
		if failure != nil {
			f.Value, f.Note = "failed", failure.Error()
		} else {
			slices.Sort(ds)
			p99 := Percentile(ds, 0.99)
			f.Value, f.OK = fmt.Sprintf("p50 %.1f ms, p99 %.1f ms", Ms(Percentile(ds, 0.5)), Ms(p99)), p99 < store.DefaultTimeout
		}
		res.add(f)
	}
}

// listCase is one filter of the inventory list.
type listCase struct {
	name string
	f    client.ListFilter
}

func measureList(ctx context.Context, cfg *ScaleConfig, srv *serverProc, c *client.Client, res *ScaleResult) {
	cfg.logf("mica cert list")
	sample, err := c.ListCertificates(ctx, client.ListFilter{Limit: 100, Status: "active"})
	if err != nil || len(sample) == 0 {
		res.add(Figure{Name: "cert list", Command: "GET /v1/certificates", Value: "failed", Target: "< 100 ms a page", Note: fmt.Sprint(err)})
		return
	}
	some := sample[len(sample)/2]
	cases := []listCase{
		{"no filter", client.ListFilter{}},
		{"identity", client.ListFilter{Identity: some.Identity}},
		{"profile", client.ListFilter{Profile: "service"}},
		{"status active", client.ListFilter{Status: "active"}},
		{"status revoked", client.ListFilter{Status: "revoked"}},
		{"status expired", client.ListFilter{Status: "expired"}},
		{"expiring within 24h", client.ListFilter{ExpiringWithin: "24h"}},
		{"profile + revoked", client.ListFilter{Profile: "web", Status: "revoked"}},
	}
	// A deep page starts half way through the inventory (at most half a
	// million rows in), from a cursor made for the place the store finds
	// there: a page read by key costs the same at any depth.
	deepPos, deepErr := deepPosition(ctx, cfg.Store)
	// Each filter's first pages are read rounds times over and the deep
	// page as often, so that a percentile has samples behind it.
	const pages, pageSize, rounds = 5, 1000, 4
	for _, lc := range cases {
		var ds, deep []time.Duration
		var rows int
		failure := deepErr
		f := lc.f
		f.Limit = pageSize
		var deepCursor string
		if failure == nil {
			deepCursor, failure = api.CertificatesCursor(f, deepPos)
		}
	read:
		for r := range rounds {
			if failure != nil {
				break
			}
			f.Cursor = ""
			for range pages {
				t0 := time.Now()
				page, err := c.ListCertificatesPage(ctx, f)
				d := time.Since(t0)
				if err != nil {
					failure = err
					break read
				}
				ds = append(ds, d)
				if r == 0 {
					rows += len(page.Certificates)
				}
				if page.Next == "" {
					break
				}
				f.Cursor = page.Next
			}
			f.Cursor = deepCursor
			t0 := time.Now()
			if _, err := c.ListCertificatesPage(ctx, f); err != nil {
				failure = err
				break
			}
			deep = append(deep, time.Since(t0))
		}
		fig := Figure{Name: "cert list: " + lc.name, Command: "GET /v1/certificates (" + describeFilter(lc.f) + "), pages of 1000", Target: "< 100 ms a page (p99)"}
		if failure != nil {
			fig.Value, fig.Note = "failed", failure.Error()
		} else {
			slices.Sort(ds)
			slices.Sort(deep)
			p99, deep99 := Percentile(ds, 0.99), Percentile(deep, 0.99)
			fig.Value = fmt.Sprintf("first %d pages (%d rows) p50 %.0f ms, p99 %.0f ms over %d reads; a page half way in (cursor) p50 %.0f ms, p99 %.0f ms",
				pages, rows, Ms(Percentile(ds, 0.5)), Ms(p99), len(ds), Ms(Percentile(deep, 0.5)), Ms(deep99))
			fig.OK = p99 < 100*time.Millisecond && deep99 < 100*time.Millisecond
		}
		res.add(fig)
	}
	// The whole profile through the CLI: every row printed, or a word on
	// how to get the rest.
	want, err := cfg.Store.CountCertificates(ctx, store.Filter{Profile: "service"})
	d, rows, msg, err2 := cliRows(ctx, cfg, srv.api, "cert", "list", "--profile", "service", "--output", "csv")
	fig := Figure{Name: "cert list (CLI)", Command: "mica cert list --profile service --output csv (end to end)", Target: "every row, or says how to get the rest"}
	switch {
	case err != nil || err2 != nil:
		fig.Value, fig.Note = "failed", fmt.Sprint(err, err2)
	default:
		fig.Value = fmt.Sprintf("%d of %d rows in %.1f s", rows, want, d.Seconds())
		fig.OK = rows == want || strings.Contains(msg, "--")
		if msg != "" {
			fig.Value += "; says: " + msg
		}
	}
	res.add(fig)
}

// deepPosition is a place about half way through the inventory (at most
// half a million certificates in). It is found by counting the
// certificates that expire before a time, halving the interval each
// round, because reading past the rows before it by offset took longer
// than the store's bound on PostgreSQL at a million.
func deepPosition(ctx context.Context, st store.Store) (store.Position, error) {
	n, err := st.CountCertificates(ctx, store.Filter{})
	if err != nil {
		return store.Position{}, err
	}
	first, err := st.ListCertificates(ctx, store.Filter{Limit: 1})
	if err != nil || len(first) == 0 {
		return store.Position{}, fmt.Errorf("bench: no first certificate: %v", err)
	}
	target := min(n/2, 500_000)
	lo, hi := first[0].NotAfter, first[0].NotAfter.Add(20*365*24*time.Hour)
	for range 64 {
		mid := lo.Add(hi.Sub(lo) / 2)
		c, err := st.CountCertificates(ctx, store.Filter{ExpiresBefore: mid})
		if err != nil {
			return store.Position{}, fmt.Errorf("bench: count the certificates expiring before %s: %w", mid, err)
		}
		if c < target {
			lo = mid
		} else {
			hi = mid
		}
		if hi.Sub(lo) < time.Second || max(c-target, target-c) <= n/100 {
			break
		}
	}
	at, err := st.ListCertificates(ctx, store.Filter{After: store.Position{NotAfter: lo}, Limit: 1})
	if err != nil || len(at) == 0 {
		return store.Position{}, fmt.Errorf("bench: no certificate half way through %d: %v", n, err)
	}
	return store.PositionOf(at[0]), nil
}

func describeFilter(f client.ListFilter) string {
	var parts []string
	for k, v := range map[string]string{"identity": f.Identity, "profile": f.Profile, "status": f.Status, "expiring_within": f.ExpiringWithin} {
		if v != "" {
			if k == "identity" {
				v = "…"
			}
			parts = append(parts, k+"="+v)
		}
	}
	slices.Sort(parts)
	if len(parts) == 0 {
		return "no filter"
	}
	return strings.Join(parts, ", ")
}

func measureCRL(ctx context.Context, cfg *ScaleConfig, res *ScaleResult) {
	cfg.logf("CRL rebuild")
	svc, err := crl.New(crl.Config{Source: cfg.Store, Issuer: cfg.Load.Issuer, Signer: issuance.NewCRLSigner(cfg.Load.Issuer, cfg.Load.Signer), IssuerID: cfg.Load.IssuerID})
	fig := Figure{Name: "CRL rebuild", Command: "crl.Service.RunOnce on the store (number, scan, encode, sign; median of 3)", Target: "< 2 s"}
	if err != nil {
		fig.Value, fig.Note = "failed", err.Error()
		res.add(fig)
		return
	}
	var ds []time.Duration
	for range 3 {
		t0 := time.Now()
		if err := svc.RunOnce(ctx); err != nil {
			fig.Value, fig.Note = "failed", err.Error()
			res.add(fig)
			return
		}
		ds = append(ds, time.Since(t0))
	}
	cur := svc.Current()
	m := median(ds)
	fig.Value, fig.OK = fmt.Sprintf("%.0f ms (%d entries, %d KiB)", Ms(m), cur.Entries, len(cur.DER)>>10), m < 2*time.Second
	res.add(fig)
}

func measureOCSP(ctx context.Context, cfg *ScaleConfig, srv *serverProc, c *client.Client, res *ScaleResult) {
	cfg.logf("OCSP")
	fig := Figure{Name: "OCSP, first ask for a serial", Command: "POST /ocsp (1000 live, 500 revoked, 500 unknown serials, each once)", Target: "< 5 ms"}
	// The second thousand live certificates: the first were read by the
	// list figures.
	live, err := c.ListCertificates(ctx, client.ListFilter{Status: "active", Limit: 2000})
	if len(live) > 1000 {
		live = live[1000:]
	}
	if err == nil {
		var revoked []client.Certificate
		revoked, err = c.ListCertificates(ctx, client.ListFilter{Status: "revoked", Limit: 500})
		live = append(live, revoked...)
	}
	if err != nil || srv.revocation == "" {
		fig.Value, fig.Note = "failed", fmt.Sprint(err, " ", srv.revocation)
		res.add(fig)
		return
	}
	var serials []*big.Int
	for _, cert := range live {
		n, _ := new(big.Int).SetString(cert.Serial, 16)
		serials = append(serials, n)
	}
	rng := mrand.New(mrand.NewPCG(1, 2))
	for range 500 {
		serials = append(serials, new(big.Int).SetUint64(rng.Uint64()|1<<63))
	}
	rng.Shuffle(len(serials), func(i, j int) { serials[i], serials[j] = serials[j], serials[i] })
	hc := &http.Client{Timeout: 10 * time.Second}
	var lat []time.Duration
	var bad int
	for _, n := range serials {
		req, err := xocsp.CreateRequest(&x509.Certificate{SerialNumber: n}, cfg.Load.Issuer, nil)
		if err != nil {
			bad++
			continue
		}
		t0 := time.Now()
		hreq, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.revocation+"/ocsp", bytes.NewReader(req))
		hreq.Header.Set("Content-Type", "application/ocsp-request")
		resp, err := hc.Do(hreq)
		if err != nil {
			bad++
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || len(body) == 0 {
			bad++
			continue
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	p99 := Percentile(lat, 0.99)
	fig.Value = fmt.Sprintf("p50 %.2f ms, p99 %.2f ms, max %.2f ms over %d requests (%d failed)",
		Ms(Percentile(lat, 0.5)), Ms(p99), Ms(lat[len(lat)-1]), len(lat), bad)
	fig.OK = p99 < 5*time.Millisecond && bad == 0
	res.add(fig)
}

func measureFeed(ctx context.Context, cfg *ScaleConfig, srv *serverProc, res *ScaleResult) {
	cfg.logf("revocation feed snapshot")
	fig := Figure{Name: "feed snapshot, new subscriber", Command: "revocation.Subscriber on /v1/revocations/feed", Target: "chunked; memory bounded"}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: cfg.Roots, Certificates: []tls.Certificate{cfg.Admin}}
	// The wire: how the snapshot arrives.
	wire, wireErr := feedWire(ctx, tlsCfg, srv.api+"/v1/revocations/feed")
	runtime.GC()
	base := heapInUse()
	_, srvPeakBefore := srv.memory()
	var peak atomic.Int64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			peak.Store(max(peak.Load(), int64(heapInUse())))
			select {
			case <-stopSampling:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	got := make(chan revocation.SnapshotInfo, 1)
	sub, err := revocation.NewSubscriber(revocation.Config{URL: srv.api + "/v1/revocations/feed", TLS: tlsCfg,
		OnReset: func(i revocation.SnapshotInfo) {
			select {
			case got <- i:
			default:
			}
		}})
	if err != nil {
		fig.Value, fig.Note = "failed", err.Error()
		res.add(fig)
		return
	}
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	t0 := time.Now()
	go sub.Run(subCtx)
	var took time.Duration
	var info revocation.SnapshotInfo
	select {
	case info = <-got:
		took = time.Since(t0)
	case <-time.After(2 * time.Minute):
		err = errors.New("no snapshot in 2 minutes")
	}
	close(stopSampling)
	<-sampled
	cancel()
	_, srvPeakAfter := srv.memory()
	if err != nil {
		fig.Value, fig.Note = "failed", err.Error()
		res.add(fig)
		return
	}
	fig.Value = fmt.Sprintf("%d revoked, %d denied in %d parts: Set switched after %.0f ms; on the wire first part %.0f ms, end %.0f ms, %d events, largest line %d KiB; subscriber heap +%s at peak; server peak RSS %s → %s",
		info.Revoked, info.Denied, info.Parts, Ms(took), Ms(wire.first), Ms(wire.total), wire.events, wire.largest>>10,
		mib(peak.Load()-int64(base)), mib(srvPeakBefore), mib(srvPeakAfter))
	// Chunked: no event carries more than a bounded part of the snapshot.
	fig.OK = wireErr == nil && info.Parts > 0 && wire.largest <= revocation.MaxLineBytes
	if wireErr != nil {
		fig.Note = wireErr.Error()
	}
	res.add(fig)
}

// snapshotWire is how a snapshot in parts arrived: events, the longest
// line, and the time from the request to the first part and to the end.
type snapshotWire struct {
	events, largest int
	first, total    time.Duration
}

// feedWire reads the feed's first answer, asking for parts, as raw
// server-sent events up to the end of the snapshot.
func feedWire(ctx context.Context, tlsCfg *tls.Config, url string) (w snapshotWire, err error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"?since=0&snapshot=chunked", nil)
	t0 := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return w, err
	}
	defer resp.Body.Close()
	br := newLineReader(resp.Body)
	for {
		line, n, err := br.next()
		if err != nil {
			return w, err
		}
		w.largest = max(w.largest, n)
		if strings.HasPrefix(line, "event: ") {
			w.events++
		}
		if line == "event: "+revocation.EventSnapshotPart && w.first == 0 {
			w.first = time.Since(t0)
		}
		if line == "event: snapshot" {
			return w, errors.New("the server sent the snapshot as one event: it streams no parts")
		}
		if line == "event: "+revocation.EventSnapshotEnd {
			// Its id and data lines follow.
			for range 2 {
				_, n, err := br.next()
				if err != nil {
					return w, err
				}
				w.largest = max(w.largest, n)
			}
			w.total = time.Since(t0)
			return w, nil
		}
	}
}

func heapInUse() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func measureMetrics(ctx context.Context, srv *serverProc, res *ScaleResult) {
	fig := Figure{Name: "metrics scrape", Command: "GET /metrics (20 scrapes, the first 15 s after the previous)", Target: "< 100 ms"}
	if srv.metric == "" {
		fig.Value = "failed"
		res.add(fig)
		return
	}
	// The inventory gauges are read from the store at most every 15 s: wait
	// that out so the first scrape pays for it, as one in 15 s does.
	select {
	case <-ctx.Done():
		return
	case <-time.After(16 * time.Second):
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	var lat []time.Duration
	var first time.Duration
	for i := range 20 {
		t0 := time.Now()
		if _, err := get(ctx, hc, srv.metric+"/metrics"); err != nil {
			fig.Value, fig.Note = "failed", err.Error()
			res.add(fig)
			return
		}
		d := time.Since(t0)
		if i == 0 {
			first = d
		}
		lat = append(lat, d)
	}
	slices.Sort(lat)
	fig.Value = fmt.Sprintf("first %.1f ms, p50 %.1f ms, max %.1f ms", Ms(first), Ms(Percentile(lat, 0.5)), Ms(lat[len(lat)-1]))
	fig.OK = lat[len(lat)-1] < 100*time.Millisecond
	res.add(fig)
}

func measureVerify(ctx context.Context, cfg *ScaleConfig, srv *serverProc, res *ScaleResult) {
	cfg.logf("mica audit verify")
	_, before := srv.memory()
	d, out, err := runCLI(ctx, cfg, srv.api, "audit", "verify")
	_, after := srv.memory()
	fig := Figure{Name: "audit verify", Command: "mica audit verify (end to end)", Target: "< 30 s; server memory bounded",
		Value: fmt.Sprintf("%.1f s; server peak RSS %s → %s", d.Seconds(), mib(before), mib(after))}
	if err != nil {
		fig.Value, fig.Note = "failed", err.Error()
	} else {
		fig.OK = d < 30*time.Second && after <= 300<<20
		fig.Note = out
	}
	res.add(fig)
}

// WriteText prints the figures as a table.
func (r *ScaleResult) WriteText(w io.Writer) {
	fmt.Fprintf(w, "mica bench scale (%s): %d live, %d revoked certificates; load average at start %.2f\n", r.Engine, r.Live, r.Revoked, r.LoadBefore)
	writeFigures(w, r.Figures)
	fmt.Fprintln(w, r.Note)
}
