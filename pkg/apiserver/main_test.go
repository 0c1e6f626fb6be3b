package apiserver

import (
	"context"
	"crypto/x509"
	"net"
	"os"
	"testing"

	"github.com/coordinator-dev/coordinator/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// serving is one way of serving gRPC: Serve (through net/http, beside
// HTTP/JSON) or ServeGRPC (gRPC's own server).
type serving struct {
	name  string
	serve func(*Server, context.Context, net.Listener) error
}

// servings are every way of serving gRPC, for tests that must hold for
// each.
var servings = []serving{{"net-http", (*Server).Serve}, {"grpc-server", (*Server).ServeGRPC}}

// serveLoopback serves s on a free loopback port until the test ends, and
// returns its address; Serve's error fails the test.
func serveLoopback(t *testing.T, s *Server) string {
	t.Helper()
	return serveLoopbackWith(t, s, servings[0])
}

// serveLoopbackWith is serveLoopback through how.
func serveLoopbackWith(t *testing.T, s *Server, how serving) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- how.serve(s, ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return lis.Addr().String()
}

// caPool is a certificate pool of the PEM CA in file.
func caPool(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	pemBytes, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	return pool
}
