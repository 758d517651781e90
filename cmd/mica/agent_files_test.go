package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/mica-pki/mica/client"
	"github.com/mica-pki/mica/credential"
	"github.com/mica-pki/mica/mtls"
)

// noLimits lets a test renew one identity a hundred times in a minute:
// the default per-identity bucket and the renewal-storm detector would
// (rightly) stop it.
const noLimits = `limits:
  per_identity: {rate: "off"}
anomalies:
  renewal_storm: {action: "off"}
`

// TestAgentCredentialDirectory runs the real agent against the real server:
// readers never see a mismatched pair across 100 renewals, a SIGKILL after
// any write step leaves an agent that restarts without a token and serves a
// matching pair (from a versioned directory and from plain files written by
// an older mica), and blocked agents say what to do and recover from a new
// token in their token file without a restart.
func TestAgentCredentialDirectory(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server and agents")
	}
	e := newTestEnvWith(t, "sqlite", noLimits)
	run := func(name string, f func(*testing.T)) {
		t.Run(name, func(t *testing.T) {
			parent := e.t
			e.t = t
			defer func() { e.t = parent }()
			f(t)
		})
	}
	run("SwapIsAtomic", e.testAgentSwapIsAtomic)
	run("CrashAtEveryStep", e.testAgentCrashAtEveryStep)
	run("BlockedAndRecovered", e.testAgentBlockedAndRecovered)
}

func (e *testEnv) testAgentSwapIsAtomic(t *testing.T) {
	const renewals = 100
	ag := e.startAgent("spiffe://example.org/billing/swap", "1h")
	src, err := mtls.NewFileSource(ag.out, mtls.WithPollInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var (
		stop                      atomic.Bool
		reads, failed, naiveMixed atomic.Int64
		firstErr                  atomic.Value
		serials                   sync.Map
		wg                        sync.WaitGroup
	)
	fail := func(err error) {
		if failed.Add(1) == 1 {
			firstErr.Store(err)
		}
	}
	wg.Go(func() {
		for !stop.Load() {
			reads.Add(1)
			c, err := credential.Dir{Path: ag.out}.Load()
			if err == nil && (len(c.Chain) != 2 || len(c.Roots) != 1) {
				err = fmt.Errorf("an incomplete credential: %d certificates, %d roots", len(c.Chain), len(c.Roots))
			}
			if err != nil {
				fail(fmt.Errorf("credential.Dir.Load: %w", err))
			} else {
				serials.Store(c.Leaf().SerialNumber.String(), true)
			}
			if err := src.Reload(); err != nil {
				fail(fmt.Errorf("mtls.FileSource.Reload: %w", err))
			}
			// A program that opens the two names one after the other can
			// straddle a switch by microseconds; counted, not asserted.
			if _, err := tls.LoadX509KeyPair(filepath.Join(ag.out, fullchainFile), filepath.Join(ag.out, keyFile)); err != nil {
				naiveMixed.Add(1)
			}
		}
	})
	start := time.Now()
	for i := 1; i <= renewals; i++ {
		ag.cmd.Process.Signal(syscall.SIGUSR1)
		ag.waitLog(t, "certificate renewed", i, time.Minute)
	}
	elapsed := time.Since(start)
	stop.Store(true)
	wg.Wait()
	seen := 0
	serials.Range(func(any, any) bool { seen++; return true })
	t.Logf("figures: %d renewals in %s; %d reads, %d failed; the reader saw %d certificates; opening fullchain.pem then key.pem by name: %d of %d mismatched",
		renewals, elapsed.Round(time.Millisecond), reads.Load(), failed.Load(), seen, naiveMixed.Load(), reads.Load())
	if failed.Load() > 0 {
		t.Fatalf("%d of %d reads saw no matching pair across %d renewals; first: %v", failed.Load(), reads.Load(), renewals, firstErr.Load())
	}
	if seen < renewals/2 {
		t.Fatalf("the reader saw only %d of %d certificates: it did not run alongside the renewals", seen, renewals)
	}
	if vs := versionDirs(t, ag.out); len(vs) != 1 {
		t.Errorf("versions left after %d renewals: %v", renewals, vs)
	}
}

// versionDirs lists the version directories of a credential directory.
func versionDirs(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, en := range entries {
		if strings.HasPrefix(en.Name(), "..") && en.Name() != credential.DataLink {
			out = append(out, en.Name())
		}
	}
	return out
}

// makePlain turns dir into what older versions of mica wrote: five plain
// files, no ..data.
func makePlain(t *testing.T, dir string) {
	t.Helper()
	var data [5][]byte
	names := [5]string{keyFile, certFile, chainFile, fullchainFile, bundleFile}
	for i, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		data[i] = b
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), data[i], 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func (e *testEnv) testAgentCrashAtEveryStep(t *testing.T) {
	const id = "spiffe://example.org/billing/crash"
	tok := strings.TrimSpace(e.micaOK("token", "create", "--identity", id, "--profile", "service"))
	out := filepath.Join(t.TempDir(), "cred")
	e.runAgent("--token", tok, "--out", out, "--ttl", "1h").stop()

	t.Run("first enrollment", func(t *testing.T) {
		const id = "spiffe://example.org/billing/crash-enroll"
		for n := 1; ; n++ {
			tok := strings.TrimSpace(e.micaOK("token", "create", "--identity", id+fmt.Sprint(n), "--profile", "service"))
			out := filepath.Join(t.TempDir(), "cred")
			crashing, ready := e.spawnAgent([]string{fmt.Sprintf("%s=%d", "MICA_TEST_CRASH_AT_STEP", n)}, "--token", tok, "--out", out)
			select {
			case <-ready:
				crashing.stop()
				if n-1 < 14 {
					t.Fatalf("the enrollment wrote in %d steps, want at least 14", n-1)
				}
				t.Logf("the agent was killed after each of the %d write steps of its first enrollment and recovered each time", n-1)
				return
			case <-crashing.done:
			case <-time.After(time.Minute):
				t.Fatalf("step %d: the agent neither started nor crashed:\n%s", n, crashing.logs.String())
			}
			if !strings.Contains(crashing.logs.String(), "crash point") {
				t.Fatalf("step %d: the agent exited without reaching its crash point:\n%s", n, crashing.logs.String())
			}
			// The same token: the server took it, and answers the same
			// key with the certificate it paid for.
			restarted := e.runAgent("--token", tok, "--out", out)
			restarted.out = out
			got, err := credential.Dir{Path: out}.Load()
			if err != nil {
				t.Fatalf("step %d: %v", n, err)
			}
			e.checkServedPair(t, restarted, got, n)
			if certs, err := e.admin.ListCertificates(t.Context(), client.ListFilter{Identity: id + fmt.Sprint(n)}); err != nil || len(certs) != 1 {
				t.Fatalf("step %d: %d certificates for one token (%v), want the one it paid for", n, len(certs), err)
			}
			restarted.stop()
		}
	})
	for _, sc := range []struct {
		name     string
		plain    bool
		minSteps int
	}{
		{"versioned directory", false, 8},
		{"plain files of an older mica", true, 20},
	} {
		t.Run(sc.name, func(t *testing.T) {
			for n := 1; ; n++ {
				if sc.plain {
					makePlain(t, out)
				}
				before, err := credential.Dir{Path: out}.Load()
				if err != nil {
					t.Fatal(err)
				}
				// No token: only the files can carry the agent.
				crashing := e.runAgentEnv([]string{fmt.Sprintf("%s=%d", "MICA_TEST_CRASH_AT_STEP", n)}, "--out", out)
				crashing.cmd.Process.Signal(syscall.SIGUSR1)
				if crashing.logs.wait("certificate renewed", 1, crashing.done, time.Minute) {
					crashing.stop()
					if n-1 < sc.minSteps {
						t.Fatalf("the renewal wrote in %d steps, want at least %d", n-1, sc.minSteps)
					}
					t.Logf("the agent was killed after each of the %d write steps of a renewal and recovered each time", n-1)
					return
				}
				select {
				case <-crashing.done:
				case <-time.After(time.Minute):
					t.Fatalf("step %d: the agent neither renewed nor crashed:\n%s", n, crashing.logs.String())
				}
				if ws, ok := crashing.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL ||
					!strings.Contains(crashing.logs.String(), "crash point") {
					t.Fatalf("step %d: the agent exited without reaching its crash point (%v):\n%s", n, crashing.cmd.ProcessState, crashing.logs.String())
				}

				restarted := e.runAgent("--out", out)
				restarted.out = out
				e.checkServedPair(t, restarted, before, n)
				restarted.cmd.Process.Signal(syscall.SIGUSR1)
				restarted.waitLog(t, "certificate renewed", 1, time.Minute)
				restarted.stop()
			}
		})
	}
}

// checkServedPair: after a crash at step n and a restart without a token,
// the directory holds a matching pair (the previous one or the new one, and
// the server's inventory knows it as active), the documented names show
// the same pair, and the Workload API serves it.
func (e *testEnv) checkServedPair(t *testing.T, a *agentProc, before *credential.Credential, n int) {
	t.Helper()
	got, err := credential.Dir{Path: a.out}.Load()
	if err != nil {
		t.Fatalf("step %d: the restarted agent's directory: %v", n, err)
	}
	if named, err := credential.In(a.out).Read(); err != nil || !named.Leaf().Equal(got.Leaf()) {
		t.Fatalf("step %d: the names do not show the pair the directory holds: %v", n, err)
	}
	rec, err := e.admin.Certificate(t.Context(), got.Leaf().SerialNumber.Text(16))
	if err != nil || rec.Status != "active" {
		t.Fatalf("step %d: the pair on disk is not an active certificate of the server: %+v, %v", n, rec, err)
	}
	if !got.Leaf().Equal(before.Leaf()) && got.Leaf().NotBefore.Before(before.Leaf().NotBefore) {
		t.Fatalf("step %d: the directory went back to an older certificate than before the crash", n)
	}
	svid, err := workloadapi.FetchX509SVID(t.Context(), a.addr())
	if err != nil {
		t.Fatalf("step %d: the restarted agent's Workload API: %v", n, err)
	}
	if !svid.Certificates[0].Equal(got.Leaf()) {
		t.Fatalf("step %d: the Workload API serves another certificate than the directory holds", n)
	}
}

func (e *testEnv) testAgentBlockedAndRecovered(t *testing.T) {
	dir := t.TempDir()
	newToken := func(id, file string) {
		tok := strings.TrimSpace(e.micaOK("token", "create", "--identity", id, "--profile", "service"))
		if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// Revoked: blocked at the next renewal, recovered by a new token.
	const revokedID = "spiffe://example.org/billing/revoked-host"
	tf := filepath.Join(dir, "revoked.token")
	newToken(revokedID, tf)
	out := filepath.Join(dir, "revoked")
	ag := e.runAgent("--token-file", tf, "--out", out, "--ttl", "1h")
	ag.out = out
	cur, err := credential.Dir{Path: out}.Load()
	if err != nil {
		t.Fatal(err)
	}
	e.micaOK("cert", "revoke", cur.Leaf().SerialNumber.Text(16), "--reason", "keyCompromise")
	ag.cmd.Process.Signal(syscall.SIGUSR1)
	ag.waitLog(t, "RENEWAL BLOCKED", 1, time.Minute)
	if l := ag.logs.String(); !strings.Contains(l, "was revoked") || !strings.Contains(l, "write a new token to "+tf) {
		t.Errorf("the blocked agent does not say what happened and what to do:\n%s", l)
	}
	if v := blockedMetric(t, ag, revokedID, "revoked"); v != 1 {
		t.Errorf("mica_agent_blocked{reason=revoked} = %v, want 1", v)
	}
	if v := blockedMetric(t, ag, revokedID, "denied"); v != 0 {
		t.Errorf("mica_agent_blocked{reason=denied} = %v, want 0 (every reason exists)", v)
	}
	newToken(revokedID, tf)
	ag.cmd.Process.Signal(syscall.SIGUSR1)
	ag.waitLog(t, "certificate enrolled", 2, time.Minute)
	if v := blockedMetric(t, ag, revokedID, "revoked"); v != 0 {
		t.Errorf("mica_agent_blocked{reason=revoked} = %v after recovery, want 0", v)
	}
	svid, err := workloadapi.FetchX509SVID(t.Context(), ag.addr())
	if err != nil || svid.Certificates[0].Equal(cur.Leaf()) {
		t.Fatalf("after recovery the Workload API serves the revoked certificate (%v)", err)
	}

	// Denied, then expired while denied: retried slowly, then blocked as
	// expired; allowed and given a token, it enrolls and renews again.
	const deniedID = "spiffe://example.org/billing/denied-host"
	tf2 := filepath.Join(dir, "denied.token")
	newToken(deniedID, tf2)
	out2 := filepath.Join(dir, "denied")
	ag2 := e.runAgent("--token-file", tf2, "--out", out2, "--ttl", "3s")
	ag2.out = out2
	e.micaOK("identity", "deny", deniedID, "--reason", "host under investigation")
	ag2.waitLog(t, "RENEWAL BLOCKED", 1, time.Minute)
	if !strings.Contains(ag2.logs.String(), "mica identity allow "+deniedID) {
		t.Errorf("the denied agent does not say how to lift it:\n%s", ag2.logs.String())
	}
	// Blocked once per change of reason: the expiry is the next one.
	ag2.waitLog(t, "expired and can no longer be renewed", 1, time.Minute)
	if v := blockedMetric(t, ag2, deniedID, "expired"); v != 1 {
		t.Errorf("mica_agent_blocked{reason=expired} = %v, want 1", v)
	}
	// A restart does not help and does not exit: the token in the file is
	// spent, so it starts blocked and waits.
	ag2.stop()
	ag2 = e.runAgent("--token-file", tf2, "--out", out2, "--ttl", "3s")
	ag2.out = out2
	// A restart inside the certificate's last second is first refused as
	// denied, then blocked as expired: wait for the latter.
	ag2.waitLog(t, "expired and can no longer be renewed", 1, time.Minute)
	if v := blockedMetric(t, ag2, deniedID, "expired"); v != 1 {
		t.Errorf("restarted: mica_agent_blocked{reason=expired} = %v, want 1", v)
	}
	e.micaOK("identity", "allow", deniedID)
	newToken(deniedID, tf2)
	ag2.cmd.Process.Signal(syscall.SIGUSR1)
	ag2.waitLog(t, "certificate enrolled", 1, time.Minute)
	ag2.waitLog(t, "certificate renewed", 1, time.Minute)
	if v := blockedMetric(t, ag2, deniedID, "expired"); v != 0 {
		t.Errorf("mica_agent_blocked{reason=expired} = %v after recovery, want 0", v)
	}
}

// blockedMetric reads mica_agent_blocked for one identity and reason.
func blockedMetric(t *testing.T, a *agentProc, id, reason string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + a.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	want := fmt.Sprintf(`mica_agent_blocked{identity=%q,reason=%q} `, id, reason)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), want); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return -1
}
