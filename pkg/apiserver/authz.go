package apiserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/url"
	"slices"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// NameURIPrefix starts a client certificate's URI SAN that allows a name:
// "urn:coordinator:name:agent-7" allows agent-7.
const NameURIPrefix = "urn:coordinator:name:"

// AllNamesURI is the URI SAN that allows every name: an operator's
// certificate. It is the only wildcard. A subject common name is always a
// name: a certificate whose CN is "*" allows the name "*" and no other, so
// that a CA which signs common names it is asked for cannot be made to issue
// an operator's certificate by a caller who asks for "*".
const AllNamesURI = NameURIPrefix + "*"

// CertNames returns the registration names a client certificate allows one
// by one: its subject's common name, and the name of every URI SAN that
// starts with NameURIPrefix, AllNamesURI excepted (see CertAllowsAllNames).
func CertNames(cert *x509.Certificate) []string {
	var names []string
	if cert.Subject.CommonName != "" {
		names = append(names, cert.Subject.CommonName)
	}
	for _, u := range cert.URIs {
		if n, ok := strings.CutPrefix(u.String(), NameURIPrefix); ok && n != "" && n != "*" {
			names = append(names, n)
		}
	}
	return names
}

// CertAllowsAllNames reports whether a client certificate has the URI SAN
// AllNamesURI, which allows every name.
func CertAllowsAllNames(cert *x509.Certificate) bool {
	return slices.ContainsFunc(cert.URIs, func(u *url.URL) bool { return u.String() == AllNamesURI })
}

// CertAllows reports whether a client certificate allows acting as name:
// name is among CertNames, or the certificate allows all names.
func CertAllows(cert *x509.Certificate, name string) bool {
	return slices.Contains(CertNames(cert), name) || CertAllowsAllNames(cert)
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
	if CertAllows(cert, name) {
		return nil
	}
	return denied(name, "the client certificate ("+cert.Subject.String()+") does not allow this name")
}
