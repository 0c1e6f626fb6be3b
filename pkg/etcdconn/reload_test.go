package etcdconn_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testcerts"
	"github.com/coordinator-dev/coordinator/pkg/embedded"
	"github.com/coordinator-dev/coordinator/pkg/etcdconn"
)

// install copies each file of from to the path it maps to, each by a
// rename, as certificate managers rotate files.
func install(t *testing.T, files map[string]string) {
	t.Helper()
	for from, to := range files {
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

// freeAddr returns a loopback host:port nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// member is an etcd member serving TLS and requiring client certificates,
// which a test can restart with other certificates.
type member struct {
	t                 *testing.T
	dir, client, peer string
	srv               *embedded.Server
}

// start starts the member with server's certificate, trusting the clients
// of clientCA only.
func (m *member) start(server testcerts.Pair, clientCA string) {
	m.t.Helper()
	srv, err := embedded.Start(context.Background(), embedded.Config{
		Dir: m.dir, ClientAddr: m.client, PeerAddr: m.peer, LogLevel: "panic",
		ClientTLS: embedded.TLS{CertFile: server.CertFile, KeyFile: server.KeyFile, TrustedCAFile: clientCA, ClientCertAuth: true},
	})
	if err != nil {
		m.t.Fatal(err)
	}
	m.srv = srv
}

// A client's reconnect (here, after its member restarted) is made with the
// TLS files as they are then: the client certificate rotated to one of
// another authority is presented, and the server's certificate is checked
// against the rotated CA bundle. The member, restarted with a certificate
// of a new authority and trusting the new clients' authority only, refuses
// the old client certificate (as a client on the old files shows) and
// cannot be verified with the old bundle, so the client's success proves
// that both were re-read.
func TestReconnectUsesRotatedFiles(t *testing.T) {
	oldServerCA, oldClientCA := testcerts.NewCA(t, "server-1"), testcerts.NewCA(t, "client-1")
	newServerCA, newClientCA := testcerts.NewCA(t, "server-2"), testcerts.NewCA(t, "client-2")
	m := &member{t: t, dir: t.TempDir(), client: freeAddr(t), peer: freeAddr(t)}
	m.start(oldServerCA.Server("etcd"), oldClientCA.CertFile)
	t.Cleanup(func() { m.srv.Close() })

	dir := t.TempDir()
	files := etcdconn.Security{
		CACert: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, "tls.crt"), Key: filepath.Join(dir, "tls.key"),
	}
	oldClient := oldClientCA.Client("node")
	install(t, map[string]string{oldServerCA.CertFile: files.CACert, oldClient.CertFile: files.Cert, oldClient.KeyFile: files.Key})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cli, err := etcdconn.Dial(ctx, etcdconn.Config{Endpoints: m.srv.Endpoints(), Security: files})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "k", "before"); err != nil {
		t.Fatal(err)
	}

	newClient := newClientCA.Client("node")
	install(t, map[string]string{newServerCA.CertFile: files.CACert, newClient.CertFile: files.Cert, newClient.KeyFile: files.Key})
	m.srv.Close()
	m.start(newServerCA.Server("etcd"), newClientCA.CertFile)

	// The client reconnects on its own, with gRPC's backoff; a read is
	// retried by the client until its context ends, which bounds each
	// attempt, and the deadline the whole.
	deadline := time.Now().Add(time.Minute)
	for {
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := cli.Get(actx, "k")
		acancel()
		if err == nil {
			if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "before" {
				t.Fatalf("read after the reconnect: %v", resp.Kvs)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reconnect with the rotated files within a minute: %v", err)
		}
	}
	if _, err := cli.Put(ctx, "k", "after"); err != nil {
		t.Fatal(err)
	}

	// The controls: either old file alone is refused now.
	for what, sec := range map[string]etcdconn.Security{
		"the old client certificate": {CACert: newServerCA.CertFile, Cert: oldClient.CertFile, Key: oldClient.KeyFile},
		"the old CA bundle":          {CACert: oldServerCA.CertFile, Cert: newClient.CertFile, Key: newClient.KeyFile},
	} {
		c, err := etcdconn.Dial(ctx, etcdconn.Config{Endpoints: m.srv.Endpoints(), DialTimeout: 5 * time.Second, Security: sec})
		if err == nil {
			c.Close()
		}
		if !errors.Is(err, etcdconn.ErrTLS) {
			t.Errorf("a client with %s: %v, want ErrTLS", what, err)
		}
	}
}
