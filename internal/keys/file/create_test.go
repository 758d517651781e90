package file

import (
	"bufio"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mica-pki/mica/internal/keys"
)

func publicHex(t testing.TB, k crypto.Signer) string {
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(der)
}

func TestLoadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.key")
	k1, created, err := LoadOrCreate(path, testPass, keys.Ed25519)
	if err != nil || !created {
		t.Fatalf("first call: created %v, %v", created, err)
	}
	k2, created, err := LoadOrCreate(path, testPass, keys.Ed25519)
	if err != nil || created {
		t.Fatalf("second call: created %v, %v", created, err)
	}
	if !samePublic(k1.Public(), k2.Public()) {
		t.Fatal("the second call returned another key")
	}
	if _, _, err := LoadOrCreate(path, []byte("another passphrase"), keys.Ed25519); !errors.Is(err, ErrWrongPassphrase) {
		t.Errorf("wrong passphrase: %v, want ErrWrongPassphrase", err)
	}
	if _, _, err := LoadOrCreate(path, testPass, keys.ECDSAP256); err == nil || !strings.Contains(err.Error(), "holds an ed25519 key, not the ecdsa-p256 key") {
		t.Errorf("a key of another algorithm: %v, want a refusal naming both", err)
	}
	if k3, _, err := LoadOrCreate(path, testPass, keys.Ed25519); err != nil || !samePublic(k1.Public(), k3.Public()) {
		t.Errorf("the refusal changed the file: %v", err)
	}
}

// TestLoadOrCreateRace starts many goroutines on one missing key at once:
// exactly one creates it and all return that key.
func TestLoadOrCreateRace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jwt.key")
	const n = 4
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		pubs    [n]string
		created [n]bool
		errs    [n]error
	)
	for i := range n {
		wg.Go(func() {
			<-start
			var k crypto.Signer
			k, created[i], errs[i] = LoadOrCreate(path, testPass, keys.ECDSAP256)
			if errs[i] == nil {
				pubs[i] = publicHex(t, k)
			}
		})
	}
	close(start)
	wg.Wait()
	creators := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("goroutine %d: %v", i, errs[i])
		}
		if pubs[i] != pubs[0] {
			t.Fatalf("goroutine %d got another key than goroutine 0", i)
		}
		if created[i] {
			creators++
		}
	}
	if creators != 1 {
		t.Errorf("%d callers say they created the key, want 1", creators)
	}
}

// TestLoadOrCreateTwoProcesses is the replicas' case: two processes start
// on one data directory at the same moment (both released by one write to
// their stdin) and must end with one key between them.
func TestLoadOrCreateTwoProcesses(t *testing.T) {
	if path := os.Getenv("MICA_TEST_LOAD_OR_CREATE"); path != "" {
		loadOrCreateProcess(path)
		return
	}
	path := filepath.Join(t.TempDir(), "audit.key")
	type proc struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		out   *bufio.Reader
	}
	var procs []proc
	for range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestLoadOrCreateTwoProcesses$")
		cmd.Env = append(os.Environ(), "MICA_TEST_LOAD_OR_CREATE="+path)
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		procs = append(procs, proc{cmd, in, bufio.NewReader(out)})
	}
	// Each process says it is ready before it is released, so neither
	// starts its work while the other is still loading.
	for _, p := range procs {
		if line, err := p.out.ReadString('\n'); err != nil || line != "ready\n" {
			t.Fatalf("helper process: %q, %v", line, err)
		}
	}
	for _, p := range procs {
		p.stdin.Close()
	}
	var results []string
	creators := 0
	for _, p := range procs {
		line, err := p.out.ReadString('\n')
		if err != nil {
			t.Fatalf("helper process said nothing: %v", err)
		}
		var pub string
		var created bool
		if _, err := fmt.Sscanf(line, "%s %t", &pub, &created); err != nil {
			t.Fatalf("helper process: %q", line)
		}
		results = append(results, pub)
		if created {
			creators++
		}
	}
	if results[0] != results[1] {
		t.Fatal("two processes starting together ended with different keys")
	}
	if creators != 1 {
		t.Errorf("%d processes say they created the key, want 1", creators)
	}
	k, _, err := LoadOrCreate(path, testPass, keys.Ed25519)
	if err != nil || publicHex(t, k) != results[0] {
		t.Errorf("the file holds another key than the processes returned: %v", err)
	}
}

// loadOrCreateProcess is the helper process: ready, wait for stdin to
// close, then load or create and print the public key and whether it made it.
func loadOrCreateProcess(path string) {
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	k, created, err := LoadOrCreate(path, testPass, keys.Ed25519)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	der, _ := x509.MarshalPKIXPublicKey(k.Public())
	fmt.Printf("%x %t\n", der, created)
	os.Exit(0)
}
