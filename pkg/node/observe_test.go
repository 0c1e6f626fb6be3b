package node_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/health"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/monitor"
	"github.com/coordinator-dev/coordinator/pkg/node"
)

// A node with a Monitor serves its readiness and metrics; its Election
// observer shows it leading.
func TestMonitorServesTheNode(t *testing.T) {
	_, cli := testenv.Etcd(t)
	mc := testenv.StartMemcached(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	obs := &election.Observer{}
	testenv.StartNode(t, node.Config{
		Etcd: cli, Layout: keyspace.MustNew("t"), NodeID: "n1", Memcached: []string{mc.Addr},
		Election: obs, Monitor: &monitor.Config{Listener: ln},
	})
	url := "http://" + ln.Addr().String()
	get := func(path string) (int, string) {
		resp, err := http.Get(url + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		code, _ := get("/readyz")
		return code == http.StatusOK
	}, "the node never was ready")
	// Ready as a standby first, perhaps: the observer given shows it leading.
	testenv.Eventually(t, 30*time.Second, obs.IsLeader, "the node never led")
	testenv.Eventually(t, 30*time.Second, func() bool {
		_, body := get("/readyz")
		return strings.Contains(body, "ok role: leader of term 1, applying")
	}, "the node never was ready as the leader")
	code, body := get("/metrics")
	if code != http.StatusOK || !strings.Contains(body, "\ncoordinator_is_leader 1\n") {
		t.Errorf("/metrics = %d, is_leader 1 missing", code)
	}
}

func TestRunRefusesBadMonitor(t *testing.T) {
	_, cli := testenv.Etcd(t)
	ctx := testenv.Ctx(t, 30*time.Second)
	base := node.Config{Etcd: cli, Layout: keyspace.MustNew("t"), NodeID: "n1", Memcached: []string{"127.0.0.1:1"}}
	bad := []node.Config{base, base}
	bad[0].Monitor = &monitor.Config{}
	bad[1].Monitor = &monitor.Config{Addr: "127.0.0.1:0"}
	bad[1].Health = health.Config{MemcachedGrace: -time.Second}
	for _, cfg := range bad {
		if err := node.Run(ctx, cfg); !errors.Is(err, config.ErrBadConfig) {
			t.Errorf("Run with Monitor %+v, Health %+v = %v, want ErrBadConfig", cfg.Monitor, cfg.Health, err)
		}
	}
}
