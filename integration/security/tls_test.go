package security

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testcerts"
	"github.com/coordinator-dev/coordinator/pkg/etcdconn"
)

// TestTLSDialFailures: each wrong setting fails with a clear error that
// matches the sentinel of its kind.
func TestTLSDialFailures(t *testing.T) {
	e := startTLSEtcd(t)
	dial(t, e.conn(e.root))
	other := testcerts.NewCA(t, "other")
	stranger := other.Client("root")
	plain := strings.Replace(e.srv.Endpoints()[0], "https://", "http://", 1)
	for _, tc := range []struct {
		name string
		cfg  etcdconn.Config
		want error
		says string
	}{
		{"no CA", etcdconn.Config{Endpoints: e.srv.Endpoints(), Security: etcdconn.Security{
			Cert: e.root.CertFile, Key: e.root.KeyFile}}, etcdconn.ErrTLS, "certificate"},
		{"server CA unknown", etcdconn.Config{Endpoints: e.srv.Endpoints(), Security: etcdconn.Security{
			CACert: other.CertFile, Cert: e.root.CertFile, Key: e.root.KeyFile}}, etcdconn.ErrTLS, "certificate"},
		{"client cert of another CA", etcdconn.Config{Endpoints: e.srv.Endpoints(), Security: etcdconn.Security{
			CACert: e.ca.CertFile, Cert: stranger.CertFile, Key: stranger.KeyFile}}, etcdconn.ErrTLS, "certificate"},
		{"no client cert", etcdconn.Config{Endpoints: e.srv.Endpoints(), Security: etcdconn.Security{
			CACert: e.ca.CertFile}}, etcdconn.ErrTLS, "certificate"},
		{"plain http", etcdconn.Config{Endpoints: []string{plain}}, etcdconn.ErrTLS, "serves TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.DialTimeout = 2 * time.Second
			start := time.Now()
			cli, err := etcdconn.Dial(context.Background(), tc.cfg)
			if err == nil {
				cli.Close()
				t.Fatal("dial succeeded")
			}
			t.Logf("%s: %v (%s)", tc.name, err, time.Since(start))
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("error %v, want %v saying %q", err, tc.want, tc.says)
			}
		})
	}
}
