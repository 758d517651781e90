package main

import (
	"flag"
	"fmt"
	"strings"

	"github.com/mica-pki/mica/internal/keys/custody"
)

// keyFlags choose where CA keys live, for the commands that make or use
// them outside a configured data directory (init, the root ceremonies).
type keyFlags struct {
	backend, module, token, pinFile *string
}

func addKeyFlags(fs *flag.FlagSet) keyFlags {
	return keyFlags{
		backend: fs.String("key-backend", "", "where CA keys live: file (encrypted with the passphrase, the default) or pkcs11"),
		module:  fs.String("pkcs11-module", "", "PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so (with --key-backend pkcs11)"),
		token:   fs.String("pkcs11-token", "", "label of the PKCS#11 token that holds the CA keys"),
		pinFile: fs.String("pkcs11-pin-file", "", "file holding the token's user PIN (or set "+custody.PINEnv+")"),
	}
}

// settings are the flags as mica.yaml's key_backend and pkcs11 sections.
func (f keyFlags) settings() (custody.Settings, error) {
	b, err := custody.ParseBackend(*f.backend)
	if err != nil {
		return custody.Settings{}, usageError("--key-backend: %v", err)
	}
	s := custody.Settings{Backend: b}
	if b == custody.PKCS11 {
		s.PKCS11 = &custody.PKCS11Settings{Module: *f.module, Token: *f.token, PINFile: *f.pinFile}
	} else if *f.module != "" || *f.token != "" || *f.pinFile != "" {
		return s, usageError("--pkcs11-module, --pkcs11-token and --pkcs11-pin-file need --key-backend pkcs11")
	}
	if err := s.Validate(); err != nil {
		return s, usageError("%v (pass --pkcs11-module and --pkcs11-token)", err)
	}
	if b == custody.File {
		s.Backend = ""
	}
	return s, nil
}

// openKeys opens the CA keys' custody as settings say.
func openKeys(env *cliEnv, s custody.Settings, passphrase []byte) (custody.Keys, error) {
	cfg, err := s.Config(passphrase, env.getenv)
	if err != nil {
		return nil, err
	}
	return custody.New(cfg)
}

// settingsYAML writes the key_backend and pkcs11 sections for mica.yaml;
// empty for the default file backend.
func settingsYAML(s custody.Settings) string {
	if s.Backend != custody.PKCS11 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n# CA keys live in a PKCS#11 token; the PIN comes from %s or pin_file.\nkey_backend: pkcs11\npkcs11:\n", custody.PINEnv)
	fmt.Fprintf(&b, "  module: %q\n  token: %q\n", s.PKCS11.Module, s.PKCS11.Token)
	if s.PKCS11.PINFile != "" {
		fmt.Fprintf(&b, "  pin_file: %q\n", s.PKCS11.PINFile)
	}
	return b.String()
}
