package keys

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"testing"
)

func TestGenerateAndAlgorithmOf(t *testing.T) {
	for _, alg := range Algorithms() {
		t.Run(string(alg), func(t *testing.T) {
			k, err := Generate(alg, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			got, err := AlgorithmOf(k.Public())
			if err != nil {
				t.Fatal(err)
			}
			if got != alg {
				t.Errorf("AlgorithmOf = %s, want %s", got, alg)
			}
		})
	}
}

func TestParseAlgorithm(t *testing.T) {
	tests := []struct {
		in      string
		want    Algorithm
		wantErr bool
	}{
		{"", Default, false},
		{"ecdsa-p256", ECDSAP256, false},
		{" ECDSA-P384 ", ECDSAP384, false},
		{"ed25519", Ed25519, false},
		{"rsa-3072", RSA3072, false},
		{"rsa-2048", "", true},
		{"p256", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseAlgorithm(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantErr && !errors.Is(err, ErrUnsupported) {
				t.Errorf("err = %v, want ErrUnsupported", err)
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := Generate("dsa", rand.Reader); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Generate(dsa) err = %v, want ErrUnsupported", err)
	}
}

func TestAlgorithmOfRefuses(t *testing.T) {
	p521, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pub  any
	}{
		{"p521", p521.Public()},
		{"rsa2048", rsa2048.Public()},
		{"nil", nil},
		{"string", "not a key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := AlgorithmOf(tt.pub); !errors.Is(err, ErrUnsupported) {
				t.Errorf("err = %v, want ErrUnsupported", err)
			}
		})
	}
}
