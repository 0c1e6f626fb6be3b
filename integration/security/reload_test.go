package security

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/integration/harness"
	"github.com/coordinator-dev/coordinator/internal/testcerts"
	"github.com/coordinator-dev/coordinator/internal/testenv"
)

// copyFile writes the content of from to to, with the modification time
// mod unless it is zero.
func copyFile(t *testing.T, from, to string, mod time.Time) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if !mod.IsZero() {
		if err := os.Chtimes(to, mod, mod); err != nil {
			t.Fatal(err)
		}
	}
}

// size returns the size of the file at path.
func size(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestServeReloadsOnSIGHUP: a running `serve` re-reads its TLS files at
// once on SIGHUP, the etcd client's (--cacert, --cert, --key) and the
// API's (--api-cert, --api-key), and keeps running. The API's certificate
// is replaced by one of the same size with the old modification time,
// which the check at each handshake cannot tell from the old: only the
// SIGHUP makes new connections get it. A SIGHUP while a file does not
// load logs which, and the node goes on with the last good files.
func TestServeReloadsOnSIGHUP(t *testing.T) {
	e := startTLSEtcd(t)
	mc := testenv.StartMemcached(t)
	dir := t.TempDir()
	node := e.ca.Client("node")
	etcdKey := filepath.Join(dir, "etcd.key")
	copyFile(t, node.KeyFile, etcdKey, time.Time{})
	apiCA := testcerts.NewCA(t, "api")
	before := apiCA.Server("old")
	apiCert, apiKey := filepath.Join(dir, "api.crt"), filepath.Join(dir, "api.key")
	mod := time.Now().Add(-time.Hour).Truncate(time.Second)
	copyFile(t, before.CertFile, apiCert, mod)
	copyFile(t, before.KeyFile, apiKey, mod)
	// A certificate of another name whose files have the same sizes.
	var after testcerts.Pair
	for i := 0; ; i++ {
		after = apiCA.Server("new")
		if size(t, after.CertFile) == size(t, before.CertFile) && size(t, after.KeyFile) == size(t, before.KeyFile) {
			break
		}
		if i == 100 {
			t.Fatal("no certificate of the same size in 100")
		}
	}
	apiAddr := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	flags := []string{
		"--endpoints", strings.Join(e.srv.Endpoints(), ","),
		"--cacert", e.ca.CertFile, "--cert", node.CertFile, "--key", etcdKey,
		"--api-listen", apiAddr, "--api-cert", apiCert, "--api-key", apiKey,
	}
	n := startServe(t, mc.Addr, flags, e.tlsFlags(e.ca.Client("cli")))
	ctx := testenv.Ctx(t, 2*time.Minute)

	roots := x509.NewCertPool()
	pem, err := os.ReadFile(apiCA.CertFile)
	if err != nil || !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("API CA: %v", err)
	}
	// served returns the common name of the certificate a new connection
	// to the API gets.
	served := func() string {
		t.Helper()
		conn, err := tls.Dial("tcp", apiAddr, &tls.Config{RootCAs: roots, ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if cn := served(); cn != "old" {
		t.Fatalf("API serves %q, want old", cn)
	}
	copyFile(t, after.CertFile, apiCert, mod)
	copyFile(t, after.KeyFile, apiKey, mod)
	if cn := served(); cn != "old" {
		t.Fatalf("API serves %q before the SIGHUP: the change was seen without it", cn)
	}

	n.Signal(syscall.SIGHUP)
	if err := n.WaitOutput(ctx, "SIGHUP: TLS files re-read"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(n.Output(), "sets=2") {
		t.Errorf("the SIGHUP did not re-read both sets of files (the etcd client's and the API's):\n%s", n.Output())
	}
	if cn := served(); cn != "new" {
		t.Fatalf("API serves %q after the SIGHUP, want new", cn)
	}

	// A key that does not load: said, and the node goes on.
	if err := os.WriteFile(etcdKey, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.Signal(syscall.SIGHUP)
	if err := n.WaitOutput(ctx, "SIGHUP: TLS files that do not load keep their last good files"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(n.Output(), etcdKey) {
		t.Errorf("the error does not name %s:\n%s", etcdKey, n.Output())
	}
	runCLIOK(t, append([]string{"submit", "--as", "after-sighup", "set", "k", "v", "--wait"}, e.tlsFlags(e.ca.Client("cli"))...)...)
	select {
	case <-n.Exited():
		t.Fatalf("serve exited after SIGHUP:\n%s", n.Output())
	default:
	}
	n.Stop(30 * time.Second)
	if code := n.ExitCode(); code != 0 {
		t.Fatalf("serve exit status %d after SIGTERM, want 0", code)
	}
}
