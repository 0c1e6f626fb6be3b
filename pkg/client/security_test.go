package client

import (
	"errors"
	"path/filepath"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/etcdconn"
)

// A bad Security setting is refused by Validate, naming the field, before
// anything is dialled.
func TestConfigValidatesSecurity(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "absent.pem")
	for _, tc := range []struct {
		cfg   Config
		field string
	}{
		{Config{Endpoints: []string{"https://127.0.0.1:1"}, Security: etcdconn.Security{Cert: missing}}, "Security.Key"},
		{Config{Endpoints: []string{"https://127.0.0.1:1"}, Security: etcdconn.Security{CACert: missing}}, "Security.CACert"},
		{Config{Endpoints: []string{"https://127.0.0.1:1"}, Security: etcdconn.Security{Password: "pw"}}, "Security.Username"},
		{Config{Endpoints: []string{"ftp://127.0.0.1:1"}}, "Endpoints"},
	} {
		_, err := New(tc.cfg)
		var fe *config.FieldError
		if !errors.As(err, &fe) || fe.Pkg != "client" || fe.Field != tc.field || !errors.Is(err, ErrBadConfig) {
			t.Errorf("New(%v) = %v, want a client FieldError of %s", tc.cfg.Security, err, tc.field)
		}
	}
}

// Nothing answering is ErrUnreachable, within the dial timeout.
func TestNewUnreachable(t *testing.T) {
	_, err := New(Config{Endpoints: []string{"http://127.0.0.1:1"}, DialTimeout: 200e6})
	if !errors.Is(err, etcdconn.ErrUnreachable) {
		t.Fatalf("New against a closed port = %v, want ErrUnreachable", err)
	}
}

func TestErrPermissionDeniedIsEtcds(t *testing.T) {
	err := denied("agent-8", rpctypes.ErrPermissionDenied)
	if !errors.Is(err, ErrPermissionDenied) || !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Fatalf("%v does not match ErrPermissionDenied", err)
	}
	if other := errors.New("x"); denied("a", other) != other {
		t.Fatal("denied changed an unrelated error")
	}
}
