package embedded_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testcerts"
	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/embedded"
	"github.com/coordinator-dev/coordinator/pkg/etcdconn"
)

// With ClientTLS the member serves https:// endpoints, and a client with a
// certificate of the trusted authority reads and writes.
func TestClientTLS(t *testing.T) {
	ca := testcerts.NewCA(t, "test")
	server := ca.Server("server")
	ctx := testenv.Ctx(t, 60*time.Second)
	srv, err := embedded.Start(ctx, embedded.Config{
		Dir: t.TempDir(), ClientAddr: "127.0.0.1:0", LogLevel: "panic",
		ClientTLS: embedded.TLS{CertFile: server.CertFile, KeyFile: server.KeyFile, TrustedCAFile: ca.CertFile, ClientCertAuth: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	if eps := srv.Endpoints(); len(eps) != 1 || !strings.HasPrefix(eps[0], "https://127.0.0.1:") {
		t.Fatalf("endpoints %v, want one https:// URL", eps)
	}
	me := ca.Client("me")
	cli, err := etcdconn.Dial(ctx, etcdconn.Config{
		Endpoints: srv.Endpoints(),
		Security:  etcdconn.Security{CACert: ca.CertFile, Cert: me.CertFile, Key: me.KeyFile},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
}

func TestClientTLSValidate(t *testing.T) {
	ca := testcerts.NewCA(t, "test")
	server := ca.Server("server")
	missing := filepath.Join(t.TempDir(), "absent.pem")
	for _, tc := range []struct {
		tls   embedded.TLS
		field string
	}{
		{embedded.TLS{CertFile: server.CertFile}, "ClientTLS.KeyFile"},
		{embedded.TLS{KeyFile: server.KeyFile}, "ClientTLS.CertFile"},
		{embedded.TLS{CertFile: server.CertFile, KeyFile: server.KeyFile, ClientCertAuth: true}, "ClientTLS.TrustedCAFile"},
		{embedded.TLS{CertFile: server.CertFile, KeyFile: server.KeyFile, TrustedCAFile: ca.CertFile}, "ClientTLS.ClientCertAuth"},
		{embedded.TLS{CertFile: missing, KeyFile: server.KeyFile}, "ClientTLS.CertFile"},
	} {
		cfg := embedded.Config{Dir: t.TempDir(), ClientTLS: tc.tls}
		err := cfg.Validate()
		var fe *config.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("Validate(%+v) = %v, want a FieldError of %s", tc.tls, err, tc.field)
		}
	}
	ok := embedded.Config{Dir: t.TempDir(), ClientTLS: embedded.TLS{CertFile: server.CertFile, KeyFile: server.KeyFile}}
	if err := ok.Validate(); err != nil {
		t.Errorf("server TLS without client certificates: %v", err)
	}
}
