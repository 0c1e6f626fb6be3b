package apiserver

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/apierr"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/registry"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

func TestConfigValidate(t *testing.T) {
	_, cli := testenv.Etcd(t)
	for _, tc := range []struct {
		cfg   Config
		field string
	}{
		{Config{}, "Etcd"},
		{Config{Etcd: cli, MaxBodyBytes: -1}, "MaxBodyBytes"},
		{Config{Etcd: cli, Namespace: "a/b"}, "Namespace"},
		{Config{Etcd: cli, AuthorizeNames: true}, "AuthorizeNames"},
		{Config{Etcd: cli, AuthorizeNames: true, TLS: &tls.Config{}}, "AuthorizeNames"},
	} {
		err := tc.cfg.Validate()
		var fe *config.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, config.ErrBadConfig) {
			t.Errorf("Validate(%+v) = %v, want a FieldError of %s", tc.cfg, err, tc.field)
		}
		if _, err := New(tc.cfg); err == nil {
			t.Errorf("New(%+v) accepted", tc.cfg)
		}
	}
	ok := Config{Etcd: cli, AuthorizeNames: true, TLS: &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestCertNames(t *testing.T) {
	u1, _ := url.Parse(NameURIPrefix + "agent-1")
	u2, _ := url.Parse(NameURIPrefix + "*")
	other, _ := url.Parse("spiffe://example.org/agent-9")
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: "agent-0"}, URIs: []*url.URL{u1, u2, other}}
	if got, want := CertNames(cert), []string{"agent-0", "agent-1", "*"}; !slices.Equal(got, want) {
		t.Fatalf("CertNames = %q, want %q", got, want)
	}
	if got := CertNames(&x509.Certificate{}); len(got) != 0 {
		t.Fatalf("CertNames of an empty certificate = %q", got)
	}
}

func TestToStatusCodesAndReasons(t *testing.T) {
	for _, tc := range []struct {
		err    error
		code   codes.Code
		reason string
	}{
		{fmt.Errorf("x: %w", ops.ErrInvalid), codes.InvalidArgument, apierr.ReasonInvalid},
		{fmt.Errorf("x: %w", registry.ErrNameHeld), codes.AlreadyExists, apierr.ReasonNameHeld},
		{fmt.Errorf("x: %w", tokenseq.ErrVoided), codes.Unavailable, apierr.ReasonNotAccepted},
		{fmt.Errorf("x: %w", tokenseq.ErrNotAccepted), codes.Unavailable, apierr.ReasonNotAccepted},
		{fmt.Errorf("x: %w", tokenseq.ErrOutcomeUnknown), codes.Unknown, apierr.ReasonOutcomeUnknown},
		{errors.New("etcd: connection refused"), codes.Unavailable, apierr.ReasonUnavailable},
		{superseded("a", 3, 5), codes.Aborted, apierr.ReasonSuperseded},
		{expired("a", 3), codes.NotFound, apierr.ReasonExpired},
	} {
		err := toStatus(tc.err)
		if status.Code(err) != tc.code || apierr.ReasonOf(err) != tc.reason {
			t.Errorf("toStatus(%v) = %v (%q), want %v %q", tc.err, err, apierr.ReasonOf(err), tc.code, tc.reason)
		}
	}
	if apierr.ReasonOf(errors.New("plain")) != "" || apierr.ReasonOf(status.Error(codes.Internal, "x")) != "" {
		t.Error("ReasonOf of an error without ErrorInfo is not empty")
	}
}
