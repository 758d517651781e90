package custody

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/mica-pki/mica/internal/keys/pkcs11"
)

// PINEnv is the environment variable that holds the PKCS#11 user PIN when
// no pin_file is configured.
const PINEnv = "MICA_PKCS11_PIN"

// Settings is the part of mica.yaml that chooses the backend:
//
//	key_backend: pkcs11
//	pkcs11:
//	  module: /usr/lib/softhsm/libsofthsm2.so
//	  token: mica
//	  pin_file: /etc/mica/pkcs11.pin   # or MICA_PKCS11_PIN
type Settings struct {
	Backend Backend         `yaml:"key_backend,omitempty"`
	PKCS11  *PKCS11Settings `yaml:"pkcs11,omitempty"`
}

// PKCS11Settings names the token. The PIN is never in mica.yaml itself.
type PKCS11Settings struct {
	Module  string `yaml:"module"`
	Token   string `yaml:"token"`
	PINFile string `yaml:"pin_file,omitempty"`
}

// Validate checks the settings without opening anything.
func (s Settings) Validate() error {
	b, err := ParseBackend(string(s.Backend))
	if err != nil {
		return err
	}
	switch {
	case b == PKCS11 && (s.PKCS11 == nil || s.PKCS11.Module == "" || s.PKCS11.Token == ""):
		return errors.New("custody: key_backend pkcs11 needs a pkcs11 section with module and token")
	case b != PKCS11 && s.PKCS11 != nil:
		return fmt.Errorf("custody: a pkcs11 section is given but key_backend is %s: set key_backend: pkcs11 or remove the section", b)
	}
	return nil
}

// Config resolves the settings into a Config: the PIN from pin_file or
// the environment (getenv), the passphrase as given.
func (s Settings) Config(passphrase []byte, getenv func(string) string) (Config, error) {
	if err := s.Validate(); err != nil {
		return Config{}, err
	}
	b, _ := ParseBackend(string(s.Backend))
	cfg := Config{Backend: b, Passphrase: passphrase}
	if b != PKCS11 {
		return cfg, nil
	}
	pin := getenv(PINEnv)
	if s.PKCS11.PINFile != "" {
		data, err := os.ReadFile(s.PKCS11.PINFile)
		if err != nil {
			return Config{}, fmt.Errorf("custody: reading the PKCS#11 PIN: %w", err)
		}
		pin = strings.TrimRight(string(data), "\r\n")
	}
	if pin == "" {
		return Config{}, fmt.Errorf("custody: no PKCS#11 PIN for token %q: set %s or pkcs11.pin_file", s.PKCS11.Token, PINEnv)
	}
	cfg.PKCS11 = pkcs11.Config{Module: s.PKCS11.Module, Token: s.PKCS11.Token, PIN: pin}
	return cfg, nil
}
