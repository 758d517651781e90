package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mica-pki/mica/internal/testlayer"
)

// micaBin is the real binary, built once; integration tests run it as
// separate processes, the way operators and machines do, and get it from
// binary. The unit layer (-short) builds none.
var micaBin string

// binary is the mica binary for a test that runs it; under -short there is
// none and the test is skipped.
func binary(t testing.TB) string {
	t.Helper()
	testlayer.Integration(t, "runs the mica binary")
	return micaBin
}

func TestMain(m *testing.M) {
	if os.Getenv("MICA_TEST_TLS_SERVER") != "" {
		os.Exit(tlsServerProcess())
	}
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "mica-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	micaBin = filepath.Join(dir, "mica")
	// The micatest tag adds test-only hooks (credential's crash points,
	// read from the environment); production builds do not contain them.
	if out, err := exec.Command("go", "build", "-tags", "micatest", "-o", micaBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building mica: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	pgCluster.Stop()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cmdResult is one finished command.
type cmdResult struct {
	stdout, stderr string
	code           int
}

// mica runs the binary with env (KEY=VALUE) added and returns its output.
func mica(t *testing.T, env []string, args ...string) cmdResult {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running mica %v: %v", args, err)
	}
	return cmdResult{out.String(), errb.String(), code}
}

// micaOK runs the binary and fails the test unless it exits 0.
func micaOK(t *testing.T, env []string, args ...string) string {
	t.Helper()
	r := mica(t, env, args...)
	if r.code != 0 {
		t.Fatalf("mica %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// serverProc is a running `mica serve`.
type serverProc struct {
	url string
	// httpURL is the plain-HTTP listener for CRL and OCSP.
	httpURL string
	// metricsURL is the Prometheus /metrics endpoint.
	metricsURL string
	cmd        *exec.Cmd
	logs       *syncBuffer
	done       chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
	// grew is closed (and replaced) at every write, for waitFor.
	grew chan struct{}
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.grew != nil {
		close(s.grew)
		s.grew = nil
	}
	return s.b.Write(p)
}

// waitFor waits until the output holds substr at least n times, for at
// most limit, and reports whether it did.
func (s *syncBuffer) waitFor(substr string, n int, limit time.Duration) bool {
	timeout := time.NewTimer(limit)
	defer timeout.Stop()
	for {
		s.mu.Lock()
		if strings.Count(s.b.String(), substr) >= n {
			s.mu.Unlock()
			return true
		}
		if s.grew == nil {
			s.grew = make(chan struct{})
		}
		grew := s.grew
		s.mu.Unlock()
		select {
		case <-grew:
		case <-timeout.C:
			return false
		}
	}
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var (
	servingLine    = regexp.MustCompile(`serving on (https://\S+)`)
	revocationLine = regexp.MustCompile(`revocation \(CRL, OCSP\) on (http://\S+)`)
	metricsLine    = regexp.MustCompile(`metrics on (http://\S+)`)
)

// startServe starts `mica serve` and waits until it prints its URL.
func startServe(t *testing.T, env []string, args ...string) *serverProc {
	t.Helper()
	cmd := exec.Command(binary(t), append([]string{"serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &serverProc{cmd: cmd, logs: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = s.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	urlc := make(chan string, 1)
	httpc := make(chan string, 1)
	metricsc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			s.logs.Write([]byte(sc.Text() + "\n"))
			if m := revocationLine.FindStringSubmatch(sc.Text()); m != nil {
				httpc <- m[1]
			}
			if m := metricsLine.FindStringSubmatch(sc.Text()); m != nil {
				metricsc <- m[1]
			}
			if m := servingLine.FindStringSubmatch(sc.Text()); m != nil {
				urlc <- m[1]
			}
		}
	}()
	go func() { cmd.Wait(); close(s.done) }()
	select {
	case s.url = <-urlc:
		// The revocation and metrics lines are printed before the
		// serving line.
		select {
		case s.httpURL = <-httpc:
		default:
		}
		select {
		case s.metricsURL = <-metricsc:
		default:
		}
	case <-s.done:
		t.Fatalf("mica serve exited before serving:\n%s", s.logs.String())
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("mica serve did not start within 60s:\n%s", s.logs.String())
	}
	t.Cleanup(func() { s.stop(t, syscall.SIGKILL) })
	return s
}

// stop sends sig and waits for the process to exit.
func (s *serverProc) stop(t *testing.T, sig syscall.Signal) {
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(sig)
	select {
	case <-s.done:
	case <-time.After(40 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
		t.Errorf("mica serve did not stop within 40s of %v", sig)
	}
}

// tlsServerProcess is the test binary re-run as a plain Go mTLS server in
// its own process: it loads a mica-issued credential, requires and verifies
// a client certificate against the mica bundle, and answers with the
// client's URI SAN. It prints its address and serves until killed.
func tlsServerProcess() int {
	dir := os.Getenv("MICA_TEST_TLS_SERVER")
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, fullchainFile), filepath.Join(dir, keyFile))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	pool := x509.NewCertPool()
	bundle, _ := os.ReadFile(filepath.Join(dir, bundleFile))
	pool.AppendCertsFromPEM(bundle)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(ln.Addr().String())
	for {
		c, err := ln.Accept()
		if err != nil {
			return 1
		}
		go func(c net.Conn) {
			defer c.Close()
			tc := c.(*tls.Conn)
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if err := tc.HandshakeContext(context.Background()); err != nil {
				return
			}
			peer := tc.ConnectionState().PeerCertificates[0]
			fmt.Fprintf(c, "hello %s\n", peer.URIs[0])
		}(c)
	}
}

// startTLSServerProcess runs tlsServerProcess with the credential in dir.
func startTLSServerProcess(t *testing.T, dir string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "MICA_TEST_TLS_SERVER="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("TLS server process did not start: %v", err)
	}
	return strings.TrimSpace(line)
}

func tlsConfigFor(roots *x509.CertPool) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots}
}
