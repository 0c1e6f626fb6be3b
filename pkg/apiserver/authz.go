package apiserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"slices"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// NameURIPrefix starts a client certificate's URI SAN that allows a name:
// "urn:coordinator:name:agent-7" allows agent-7, and
// "urn:coordinator:name:*" allows every name.
const NameURIPrefix = "urn:coordinator:name:"

// CertNames returns the registration names a client certificate may act
// as: its subject's common name, and every name of a URI SAN that starts
// with NameURIPrefix. "*" among them allows every name.
func CertNames(cert *x509.Certificate) []string {
	var names []string
	if cert.Subject.CommonName != "" {
		names = append(names, cert.Subject.CommonName)
	}
	for _, u := range cert.URIs {
		if n, ok := strings.CutPrefix(u.String(), NameURIPrefix); ok && n != "" {
			names = append(names, n)
		}
	}
	return names
}

// verifiedCert returns the verified client certificate of the call, nil
// when it has none.
func verifiedCert(ctx context.Context) *x509.Certificate {
	var st *tls.ConnectionState
	if ci, ok := callerInfoFrom(ctx); ok {
		st = ci.tls
	} else if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			st = &ti.State
		}
	}
	if st == nil || len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) == 0 {
		return nil
	}
	return st.VerifiedChains[0][0]
}

// authorize refuses a call that may not act as name.
func (s *Server) authorize(ctx context.Context, name string) error {
	if !s.cfg.AuthorizeNames {
		return nil
	}
	cert := verifiedCert(ctx)
	if cert == nil {
		return denied(name, "no verified client certificate")
	}
	names := CertNames(cert)
	if slices.Contains(names, name) || slices.Contains(names, "*") {
		return nil
	}
	return denied(name, "the client certificate ("+cert.Subject.String()+") does not allow this name")
}
