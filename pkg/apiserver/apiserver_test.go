package apiserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/internal/testcerts"
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
	u2, _ := url.Parse(AllNamesURI)
	other, _ := url.Parse("spiffe://example.org/agent-9")
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: "agent-0"}, URIs: []*url.URL{u1, u2, other}}
	if got, want := CertNames(cert), []string{"agent-0", "agent-1"}; !slices.Equal(got, want) {
		t.Fatalf("CertNames = %q, want %q", got, want)
	}
	if !CertAllowsAllNames(cert) {
		t.Fatalf("a certificate with %s does not allow all names", AllNamesURI)
	}
	if got := CertNames(&x509.Certificate{}); len(got) != 0 {
		t.Fatalf("CertNames of an empty certificate = %q", got)
	}
}

// Only the URI SAN urn:coordinator:name:* allows every name: a common name
// "*" is a name like any other, and so is "*" inside a longer URI.
func TestOnlyTheURIWildcardAllowsEveryName(t *testing.T) {
	uri := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	for _, tc := range []struct {
		what    string
		cert    *x509.Certificate
		allowed []string
		refused []string
	}{
		{"CN *", &x509.Certificate{Subject: pkix.Name{CommonName: "*"}},
			[]string{"*"}, []string{"agent-1", "", "**"}},
		{"CN agent-1", &x509.Certificate{Subject: pkix.Name{CommonName: "agent-1"}},
			[]string{"agent-1"}, []string{"*", "agent-2"}},
		{"URI wildcard", &x509.Certificate{Subject: pkix.Name{CommonName: "ops"}, URIs: []*url.URL{uri(AllNamesURI)}},
			[]string{"ops", "agent-1", "*", "名前"}, nil},
		{"URI names", &x509.Certificate{URIs: []*url.URL{uri(NameURIPrefix + "agent-1"), uri(NameURIPrefix + "a*")}},
			[]string{"agent-1", "a*"}, []string{"*", "agent-2", "a"}},
		{"wildcard under another scheme", &x509.Certificate{URIs: []*url.URL{uri("urn:other:name:*"), uri("spiffe://x/*")}},
			nil, []string{"*", "agent-1"}},
	} {
		for _, n := range tc.allowed {
			if !CertAllows(tc.cert, n) {
				t.Errorf("%s: %q refused", tc.what, n)
			}
		}
		for _, n := range tc.refused {
			if CertAllows(tc.cert, n) {
				t.Errorf("%s: %q allowed", tc.what, n)
			}
		}
	}

	// The server's check, with the certificate as gRPC hands it over.
	_, cli := testenv.Etcd(t)
	s, err := New(Config{Etcd: cli, AuthorizeNames: true, TLS: &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert}})
	if err != nil {
		t.Fatal(err)
	}
	as := func(cert *x509.Certificate) context.Context {
		return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{
			State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}},
		}})
	}
	star := &x509.Certificate{Subject: pkix.Name{CommonName: "*"}}
	if err := s.authorize(as(star), "agent-1"); status.Code(err) != codes.PermissionDenied || apierr.ReasonOf(err) != apierr.ReasonPermissionDenied {
		t.Errorf("CN * acting as agent-1: %v, want PERMISSION_DENIED", err)
	}
	if err := s.authorize(as(star), "*"); err != nil {
		t.Errorf("CN * acting as *: %v", err)
	}
	wild := &x509.Certificate{URIs: []*url.URL{uri(AllNamesURI)}}
	if err := s.authorize(as(wild), "agent-1"); err != nil {
		t.Errorf("%s acting as agent-1: %v", AllNamesURI, err)
	}
}

// Over mutual TLS, with certificates signed by a CA made for the test: a
// client certificate whose common name is "*" registers as "*" and is
// refused every other name, through HTTP/JSON and gRPC alike, and nothing
// is written for the refused calls.
func TestCommonNameStarIsOneName(t *testing.T) {
	_, cli := testenv.Etcd(t)
	ca := testcerts.NewCA(t, "api")
	server, star := ca.Server("node"), ca.Client("*")
	tlsCfg, err := TLSFiles{CertFile: server.CertFile, KeyFile: server.KeyFile, ClientCAFile: ca.CertFile}.Load()
	if err != nil {
		t.Fatal(err)
	}
	ns := "cn-star"
	s, err := New(Config{Etcd: cli, Namespace: ns, TLS: tlsCfg, AuthorizeNames: true})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveLoopback(t, s)

	pool := caPool(t, ca.CertFile)
	pair, err := tls.LoadX509KeyPair(star.CertFile, star.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	clientTLS := &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	tr := &http.Transport{TLSClientConfig: clientTLS}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	register := func(body string) (int, string) {
		t.Helper()
		resp, err := hc.Post("https://"+addr+"/v1/register", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := register(`{"name":"agent-1","ttl_seconds":5}`); code != http.StatusForbidden || !strings.Contains(body, apierr.ReasonPermissionDenied) {
		t.Fatalf("HTTPS register agent-1 with CN *: %d %s", code, body)
	}
	if code, body := register(`{"name":"*","ttl_seconds":5}`); code != http.StatusOK {
		t.Fatalf("HTTPS register * with CN *: %d %s", code, body)
	}

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	api := pb.NewCoordinatorClient(conn)
	cctx := testenv.Ctx(t, 30*time.Second)
	_, err = api.Register(cctx, &pb.RegisterRequest{Name: "agent-2", TtlSeconds: 5})
	if status.Code(err) != codes.PermissionDenied || apierr.ReasonOf(err) != apierr.ReasonPermissionDenied {
		t.Fatalf("gRPC register agent-2 with CN *: %v, want PERMISSION_DENIED", err)
	}
	if _, err := api.Register(cctx, &pb.RegisterRequest{Name: "*", TtlSeconds: 5}); err != nil {
		t.Fatalf("gRPC register * with CN *: %v", err)
	}

	resp, err := cli.Get(cctx, "/coordinator/"+ns+"/reg/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if k := string(kv.Key); k != "/coordinator/"+ns+"/reg/*" {
			t.Errorf("registration %s written for a refused name", k)
		}
	}
	if len(resp.Kvs) != 1 {
		t.Errorf("%d registrations, want the one of *", len(resp.Kvs))
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
