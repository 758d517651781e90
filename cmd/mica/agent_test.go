package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mica-pki/mica/credential"
	"github.com/mica-pki/mica/internal/testaddr"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// agentProc is a running `mica agent`.
type agentProc struct {
	cmd     *exec.Cmd
	socket  string
	metrics string
	out     string
	logs    *logWatch
	done    chan struct{}
}

// logWatch is an agent's stderr, kept whole for failure reports and
// watched, so that tests wait on what the agent says (with a deadline)
// instead of sleeping.
type logWatch struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{}
}

func newLogWatch() *logWatch { return &logWatch{changed: make(chan struct{})} }

func (w *logWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	close(w.changed)
	w.changed = make(chan struct{})
	return w.b.Write(p)
}

func (w *logWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// count is how often substr occurs in the log, and a channel closed at the
// next write.
func (w *logWatch) count(substr string) (int, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Count(w.b.String(), substr), w.changed
}

// wait waits until substr occurs at least n times, or the process exits
// (done), or limit passes; it reports whether substr arrived.
func (w *logWatch) wait(substr string, n int, done <-chan struct{}, limit time.Duration) bool {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		c, changed := w.count(substr)
		if c >= n {
			return true
		}
		select {
		case <-changed:
		case <-done:
			c, _ := w.count(substr)
			return c >= n
		case <-deadline.C:
			return false
		}
	}
}

// waitLog fails the test unless substr occurs at least n times in the
// agent's log within limit.
func (a *agentProc) waitLog(t *testing.T, substr string, n int, limit time.Duration) {
	t.Helper()
	if !a.logs.wait(substr, n, a.done, limit) {
		t.Fatalf("the agent did not log %q %d times within %s:\n%s", substr, n, limit, a.logs.String())
	}
}

var agentReadyLine = regexp.MustCompile(`mica agent ready: identity (\S+), socket (\S+), metrics (\S+)`)

// startAgent enrolls an agent for id with a fresh token and waits until it
// serves its socket.
func (e *testEnv) startAgent(id, ttl string) *agentProc {
	e.t.Helper()
	tok := strings.TrimSpace(e.micaOK("token", "create", "--identity", id, "--profile", "service"))
	out := filepath.Join(e.t.TempDir(), "cred")
	a := e.runAgent("--token", tok, "--out", out, "--ttl", ttl)
	a.out = out
	return a
}

// runAgent starts `mica agent` with args and waits until it is ready.
func (e *testEnv) runAgent(args ...string) *agentProc {
	e.t.Helper()
	return e.runAgentEnv(nil, args...)
}

// runAgentEnv is runAgent with env (KEY=VALUE) added to the agent's.
func (e *testEnv) runAgentEnv(env []string, args ...string) *agentProc {
	e.t.Helper()
	a, ready := e.spawnAgent(env, args...)
	select {
	case m := <-ready:
		a.metrics = m[3]
	case <-a.done:
		e.t.Fatalf("mica agent exited before it was ready:\n%s", a.logs.String())
	case <-time.After(60 * time.Second):
		a.cmd.Process.Kill()
		e.t.Fatalf("mica agent not ready within 60s:\n%s", a.logs.String())
	}
	return a
}

// spawnAgent starts `mica agent` and returns at once, with a channel that
// gets the ready line's fields.
func (e *testEnv) spawnAgent(env []string, args ...string) (*agentProc, <-chan []string) {
	e.t.Helper()
	dir := e.t.TempDir()
	a := &agentProc{socket: filepath.Join(dir, "agent.sock"), logs: newLogWatch(), done: make(chan struct{})}
	a.cmd = exec.Command(binary(e.t), append([]string{"agent", "--server", e.server.url,
		"--socket", a.socket, "--metrics", "127.0.0.1:0", "--bundle-interval", "2s"}, args...)...)
	a.cmd.Env = append(os.Environ(), env...)
	a.cmd.Stderr = a.logs
	stdout, err := a.cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := a.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	ready := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			// Keep reading past a second ready line: a reader that stopped
			// would leave the agent blocked writing its output.
			if m := agentReadyLine.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case ready <- m:
				default:
				}
			}
		}
	}()
	go func() { a.cmd.Wait(); close(a.done) }()
	t := e.t
	t.Cleanup(func() {
		a.stop()
		if t.Failed() {
			t.Logf("agent %v log:\n%s", a.cmd.Args[1:], a.logs.String())
		}
	})
	return a, ready
}

func (a *agentProc) stop() {
	select {
	case <-a.done:
		return
	default:
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(20 * time.Second):
		a.cmd.Process.Kill()
		<-a.done
	}
}

func (a *agentProc) addr() workloadapi.ClientOption {
	return workloadapi.WithAddr("unix://" + a.socket)
}

// metric reads one sample from the agent's /metrics, -1 when absent.
func (a *agentProc) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + a.metrics + "/metrics")
	if err != nil {
		t.Fatalf("scraping the agent: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			return v
		}
	}
	return -1
}

// procFigures reads resident memory (KiB) and CPU time used so far (user +
// system) of a process from /proc.
func procFigures(t *testing.T, pid int) (rssKiB int64, cpu time.Duration) {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			rssKiB, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	// Fields after the command name (which may hold spaces) start at ")".
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return rssKiB, time.Duration(utime+stime) * time.Second / 100 // USER_HZ is 100 on Linux
}

// waitFor polls cond, for at most limit: what it waits for happens in
// another process (the server, an agent), which signals nothing here.
func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestAgent runs the real server and real agents, and go-spiffe as the
// workloads: SVIDs verify, rotations reach an open stream, mTLS between
// two workloads never fails across rotations, JWT-SVIDs validate, and an
// outage of the server is survived.
func TestAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server and agents")
	}
	e := newTestEnv(t, "sqlite")
	ctx := t.Context()

	// Short TTL so the agents rotate every ~5s; the profile's max_ttl governs
	// what may be asked for.
	ttl := envOr(&cliEnv{getenv: os.Getenv}, "MICA_TEST_AGENT_TTL", "8s")
	soak, _ := time.ParseDuration(envOr(&cliEnv{getenv: os.Getenv}, "MICA_TEST_AGENT_SOAK", "30s"))
	agentA := e.startAgent("spiffe://example.org/billing/a", ttl)
	agentB := e.startAgent("spiffe://example.org/billing/b", ttl)

	t.Run("SecurityHeaderRequired", func(t *testing.T) {
		conn, err := grpc.NewClient("unix://"+agentA.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		c := workload.NewSpiffeWorkloadAPIClient(conn)
		_, err = c.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"x"}})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("call without the workload.spiffe.io header: %v, want InvalidArgument", err)
		}
	})

	t.Run("RotationOnOneStream", func(t *testing.T) {
		conn, err := grpc.NewClient("unix://"+agentA.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		sctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true"), 5*time.Minute)
		defer cancel()
		stream, err := workload.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(sctx, &workload.X509SVIDRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var serials []string
		for len(serials) < 2 {
			resp, err := stream.Recv()
			if err != nil {
				t.Fatalf("stream ended after %d SVIDs: %v", len(serials), err)
			}
			svid, err := x509svid.ParseRaw(resp.Svids[0].X509Svid, resp.Svids[0].X509SvidKey)
			if err != nil {
				t.Fatalf("go-spiffe refuses the SVID: %v", err)
			}
			if s := svid.Certificates[0].SerialNumber.String(); len(serials) == 0 || serials[len(serials)-1] != s {
				serials = append(serials, s)
			}
		}
	})

	t.Run("X509SourceVerifies", func(t *testing.T) {
		src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(agentA.addr()))
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		svid, err := src.GetX509SVID()
		if err != nil {
			t.Fatal(err)
		}
		if svid.ID.String() != "spiffe://example.org/billing/a" {
			t.Errorf("SVID for %s", svid.ID)
		}
		first := svid.Certificates[0]
		if _, _, err := x509svid.Verify(svid.Certificates, src); err != nil {
			t.Fatalf("x509svid.Verify: %v", err)
		}
		// The source keeps its one stream; the renewed SVID arrives on it.
		waitFor(t, "a renewed SVID in the X509Source", 5*time.Minute, func() bool {
			s, err := src.GetX509SVID()
			return err == nil && !s.Certificates[0].Equal(first)
		})
		renewed, _ := src.GetX509SVID()
		if _, _, err := x509svid.Verify(renewed.Certificates, src); err != nil {
			t.Fatalf("renewed SVID: x509svid.Verify: %v", err)
		}
	})

	t.Run("JWTSVID", func(t *testing.T) {
		src, err := workloadapi.NewJWTSource(ctx, workloadapi.WithClientOptions(agentA.addr()))
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		svid, err := src.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "billing-db"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := jwtsvid.ParseAndValidate(svid.Marshal(), src, []string{"billing-db"}); err != nil {
			t.Errorf("validating with the JWT bundle: %v", err)
		}
		got, err := workloadapi.ValidateJWTSVID(ctx, svid.Marshal(), "billing-db", agentB.addr())
		if err != nil || got.ID.String() != "spiffe://example.org/billing/a" {
			t.Errorf("ValidateJWTSVID through the other agent: %v, %v", got, err)
		}
		if _, err := workloadapi.ValidateJWTSVID(ctx, svid.Marshal(), "someone-else", agentB.addr()); err == nil {
			t.Error("a JWT-SVID validated for an audience it was not made for")
		}
	})

	t.Run("MTLSAcrossRotations", func(t *testing.T) {
		srcA, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(agentA.addr()))
		if err != nil {
			t.Fatal(err)
		}
		defer srcA.Close()
		srcB, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(agentB.addr()))
		if err != nil {
			t.Fatal(err)
		}
		defer srcB.Close()
		idA, idB := spiffeid.RequireFromString("spiffe://example.org/billing/a"), spiffeid.RequireFromString("spiffe://example.org/billing/b")
		ln, err := spiffetls.ListenWithMode(ctx, "tcp", "127.0.0.1:0", spiffetls.MTLSServerWithSource(tlsconfig.AuthorizeID(idB), srcA))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func(c net.Conn) {
					defer c.Close()
					c.SetDeadline(time.Now().Add(5 * time.Second))
					io.Copy(c, io.LimitReader(c, 5))
				}(c)
			}
		}()
		_, cpu0 := procFigures(t, agentA.cmd.Process.Pid)
		renewals0 := agentA.metric(t, "mica_agent_renewals_total")
		var ok, failed atomic.Int64
		serials := map[string]bool{}
		end := time.Now().Add(soak)
		for time.Now().Before(end) {
			conn, err := spiffetls.DialWithMode(ctx, "tcp", ln.Addr().String(), spiffetls.MTLSClientWithSource(tlsconfig.AuthorizeID(idA), srcB))
			if err == nil {
				_, err = conn.Write([]byte("hello"))
				buf := make([]byte, 5)
				if err == nil {
					_, err = io.ReadFull(conn, buf)
				}
				if st, ok := conn.(interface{ PeerID() (spiffeid.ID, error) }); ok {
					if id, e := st.PeerID(); e == nil && id != idA {
						err = fmt.Errorf("peer %s", id)
					}
				}
				conn.Close()
			}
			if err != nil {
				if failed.Add(1) <= 3 {
					t.Errorf("handshake or exchange failed at %s: %v", time.Now().Format(time.RFC3339Nano), err)
				}
			} else {
				ok.Add(1)
			}
			if s, err := srcB.GetX509SVID(); err == nil {
				serials[s.Certificates[0].SerialNumber.String()] = true
			}
			time.Sleep(20 * time.Millisecond) // the pace of the load, not a wait: a connection every 20 ms for the soak
		}
		rss, cpu1 := procFigures(t, agentA.cmd.Process.Pid)
		renewals := agentA.metric(t, "mica_agent_renewals_total") - renewals0
		t.Logf("figures: %d mTLS connections, %d failed, over %s with TTL %s; workload B saw %d SVIDs, agent A renewed %.0f times",
			ok.Load(), failed.Load(), soak, ttl, len(serials), renewals)
		t.Logf("figures: agent during renewals: RSS %d KiB, CPU %s over %s (%.2f%% of a core)",
			rss, cpu1-cpu0, soak, 100*float64(cpu1-cpu0)/float64(soak))
		if len(serials) < 3 {
			t.Errorf("workload B saw %d SVIDs in %s; want rotations", len(serials), soak)
		}
	})

	agentA.stop()
	agentB.stop()

	t.Run("IdentitiesByCallerUID", func(t *testing.T) {
		dir := t.TempDir()
		me := os.Getuid()
		for _, name := range []string{"mine", "theirs"} {
			tok := strings.TrimSpace(e.micaOK("token", "create", "--identity", "spiffe://example.org/billing/"+name, "--profile", "service"))
			if err := os.WriteFile(filepath.Join(dir, name+".token"), []byte(tok), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		cfg := fmt.Sprintf(`ttl: 1h
identities:
  - out: %s
    token_file: %s
    uids: [%d]
  - out: %s
    token_file: %s
    uids: [%d]
`, filepath.Join(dir, "mine"), filepath.Join(dir, "mine.token"), me, filepath.Join(dir, "theirs"), filepath.Join(dir, "theirs.token"), me+1)
		if err := os.WriteFile(filepath.Join(dir, "agent.yaml"), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		ag := e.runAgent("--config", filepath.Join(dir, "agent.yaml"))
		svids, err := workloadapi.FetchX509SVIDs(ctx, ag.addr())
		if err != nil {
			t.Fatal(err)
		}
		if len(svids) != 1 || svids[0].ID.String() != "spiffe://example.org/billing/mine" {
			t.Errorf("this uid got %d SVIDs (%v), want only billing/mine", len(svids), svids)
		}
		if _, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "db", Subject: spiffeid.RequireFromString("spiffe://example.org/billing/theirs")}, ag.addr()); err == nil {
			t.Error("a JWT-SVID for another uid's identity was handed out")
		}
		if _, err := os.Stat(filepath.Join(dir, "theirs", keyFile)); err != nil {
			t.Errorf("the other identity was not enrolled and written: %v", err)
		}
	})

	t.Run("ServerOutage", func(t *testing.T) {
		// The server must come back where the agent knows it. Not on the
		// port it got from :0, which the kernel may give any socket while
		// the server is down, but on one from testaddr, which it gives to
		// none: move the server there first.
		listen := testaddr.Localhost(t).String()
		e.server.stop(t, syscall.SIGTERM)
		e.server = startServe(e.root, e.env, "--listen", listen)
		e.env = append(e.env, "MICA_SERVER="+e.server.url) // the last one counts
		// Two minutes: the outage (a server restart, slow on a loaded
		// machine) must end before the certificate does, or the agent is
		// rightly blocked as expired (see TestAgentCredentialDirectory).
		ag := e.startAgent("spiffe://example.org/billing/outage", "2m")

		src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(ag.addr()))
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		before, _ := src.GetX509SVID()
		e.server.stop(t, syscall.SIGTERM)
		ag.cmd.Process.Signal(syscall.SIGUSR1) // renew now, not at 80s

		waitFor(t, "renewal failures in the agent's metrics", time.Minute, func() bool {
			return ag.metric(t, "mica_agent_renewal_failures_total") >= 2
		})
		during, _ := src.GetX509SVID()
		if !during.Certificates[0].Equal(before.Certificates[0]) || time.Now().After(during.Certificates[0].NotAfter) {
			t.Fatal("the agent did not keep serving its valid certificate while the server was down")
		}
		if !strings.Contains(ag.logs.String(), "renewal failed") {
			t.Errorf("no failure in the agent's log:\n%s", ag.logs.String())
		}
		onDisk, err := os.ReadFile(filepath.Join(ag.out, certFile))
		if err != nil {
			t.Fatal(err)
		}
		if certs, _ := credential.ParseCertificates(onDisk); len(certs) == 0 || !certs[0].Equal(before.Certificates[0]) {
			t.Error("the certificate on disk changed while the server was down")
		}

		e.server = startServe(e.root, e.env, "--listen", listen)
		waitFor(t, "a renewal after the server returned", time.Minute, func() bool {
			s, err := src.GetX509SVID()
			return err == nil && !s.Certificates[0].Equal(before.Certificates[0])
		})
		after, _ := src.GetX509SVID()
		if _, _, err := x509svid.Verify(after.Certificates, src); err != nil {
			t.Errorf("renewed SVID does not verify: %v", err)
		}
		if v := ag.metric(t, "mica_agent_certificate_expiry_seconds"); v <= 0 {
			t.Errorf("expiry gauge %v after renewal", v)
		}
	})
}
