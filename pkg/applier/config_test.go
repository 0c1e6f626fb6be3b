package applier_test

import (
	"errors"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
)

func TestRunRefusesBadConfig(t *testing.T) {
	_, cli := testenv.Etcd(t)
	ctx := testenv.Ctx(t, 30*time.Second)
	lead := &election.Leadership{Term: 1}
	for _, cfg := range []applier.Config{
		{Layout: keyspace.MustNew("t")},
		{Etcd: cli, Layout: keyspace.MustNew("t")},
		{Etcd: cli},
	} {
		if err := applier.Run(ctx, cfg, lead); !errors.Is(err, config.ErrBadConfig) {
			t.Errorf("Run(%+v) = %v, want ErrBadConfig", cfg, err)
		}
		if err := applier.StartStandby(ctx, cfg).Run(ctx, lead); !errors.Is(err, config.ErrBadConfig) {
			t.Errorf("Standby.Run(%+v) = %v, want ErrBadConfig", cfg, err)
		}
	}
}
