package authority

import "crypto/x509"

// MemoChain is the chain m remembers as verified, nil when none.
func MemoChain(m *ConnMemo) []*x509.Certificate {
	if v := m.verified.Load(); v != nil {
		return v.presented
	}
	return nil
}
