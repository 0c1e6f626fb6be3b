package apiserver

import (
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/coordinator-dev/coordinator/internal/testcerts"
	"github.com/coordinator-dev/coordinator/internal/testenv"
)

// install copies a certificate pair to cert and key, each by a rename, as
// certificate managers rotate files.
func install(t *testing.T, p testcerts.Pair, cert, key string) {
	t.Helper()
	for from, to := range map[string]string{p.CertFile: cert, p.KeyFile: key} {
		data, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to+".new", data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(to+".new", to); err != nil {
			t.Fatal(err)
		}
	}
}

// A rotated API certificate is served on new connections without a
// restart, while a connection opened before keeps working with the
// certificate it was made with.
func TestServeReloadsRotatedCertificate(t *testing.T) {
	_, cli := testenv.Etcd(t)
	ca := testcerts.NewCA(t, "api")
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	install(t, ca.Server("before"), cert, key)
	tlsCfg, err := TLSFiles{CertFile: cert, KeyFile: key}.Reloading()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{Etcd: cli, Namespace: "rotate", TLS: tlsCfg, Logger: testenv.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveLoopback(t, srv)

	roots := caPool(t, ca.CertFile)
	newClient := func() *http.Client {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr}
	}
	// served returns the common name of the certificate a GET of
	// /v1/status was served with, and the protocol.
	served := func(c *http.Client) (string, string) {
		t.Helper()
		resp, err := c.Get("https://" + addr + "/v1/status")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /v1/status = %s", resp.Status)
		}
		return resp.TLS.PeerCertificates[0].Subject.CommonName, resp.Proto
	}

	open := newClient()
	if cn, proto := served(open); cn != "before" || proto != "HTTP/2.0" {
		t.Fatalf("served with %q over %s, want before over HTTP/2.0", cn, proto)
	}
	install(t, ca.Server("after"), cert, key)
	if cn, _ := served(newClient()); cn != "after" {
		t.Errorf("a new connection after the rotation got %q, want after", cn)
	}
	if cn, _ := served(open); cn != "before" {
		t.Errorf("the connection opened before the rotation got %q, want it kept (before)", cn)
	}
}
