package node_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

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

// monitorURL serves a node's monitor on a free loopback port and returns
// its URL and a getter of its paths.
func monitorURL(t *testing.T) (*monitor.Config, func(path string) (int, string)) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	return &monitor.Config{Listener: ln}, func(path string) (int, string) {
		resp, err := http.Get(url + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
}

// waitCode waits until path answers code, and returns its body.
func waitCode(t *testing.T, get func(string) (int, string), path string, code int) string {
	t.Helper()
	var body string
	testenv.Eventually(t, 30*time.Second, func() bool {
		var got int
		got, body = get(path)
		return got == code
	}, "%s never answered %d (last: %q)", path, code, body)
	return body
}

// With etcd gone, the node is neither healthy nor ready to take calls, but
// alive: a liveness probe must not restart it during an etcd outage.
func TestLivezPassesWithoutEtcd(t *testing.T) {
	srv, cli := testenv.Etcd(t)
	mc := testenv.StartMemcached(t)
	mcfg, get := monitorURL(t)
	testenv.StartNode(t, node.Config{
		Etcd: cli, Layout: keyspace.MustNew("t"), NodeID: "n1", Memcached: []string{mc.Addr},
		Monitor: mcfg, Health: health.Config{ProbeInterval: 20 * time.Millisecond},
	})
	waitCode(t, get, "/readyz/applier", http.StatusOK)
	waitCode(t, get, "/readyz/api", http.StatusOK)
	waitCode(t, get, "/livez", http.StatusOK)
	srv.Close()
	waitCode(t, get, "/healthz", http.StatusServiceUnavailable)
	if body := waitCode(t, get, "/readyz/api", http.StatusServiceUnavailable); !strings.Contains(body, "fail etcd: last answered") {
		t.Errorf("/readyz/api without etcd does not say etcd is away: %q", body)
	}
	code, body := get("/livez")
	if code != http.StatusOK || !strings.Contains(body, "ok loop: last went round") {
		t.Errorf("/livez without etcd = %d %q, want 200", code, body)
	}
}

// With memcached gone for longer than the grace, the node's applier is not
// ready but its API is: submissions are stored in etcd and applied later.
// The gRPC health statuses say the same.
func TestAPIReadyWithoutMemcached(t *testing.T) {
	_, cli := testenv.Etcd(t)
	mc := testenv.StartMemcached(t)
	mcfg, get := monitorURL(t)
	hs := grpchealth.NewServer()
	testenv.StartNode(t, node.Config{
		Etcd: cli, Layout: keyspace.MustNew("t"), NodeID: "n1", Memcached: []string{mc.Addr}, Monitor: mcfg,
		Health: health.Config{MemcachedGrace: 200 * time.Millisecond, ProbeInterval: 20 * time.Millisecond, GRPC: hs},
	})
	grpcStatus := func(svc string) healthpb.HealthCheckResponse_ServingStatus {
		resp, err := hs.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			return healthpb.HealthCheckResponse_UNKNOWN
		}
		return resp.GetStatus()
	}
	waitGRPC := func(svc string, want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		testenv.Eventually(t, 30*time.Second, func() bool { return grpcStatus(svc) == want },
			"gRPC health of %q never was %s (last: %s)", svc, want, grpcStatus(svc))
	}
	waitCode(t, get, "/readyz/applier", http.StatusOK)
	waitGRPC(health.ServiceApplier, healthpb.HealthCheckResponse_SERVING)
	waitGRPC(health.ServiceAPI, healthpb.HealthCheckResponse_SERVING)

	mc.Stop()
	// The applier's own failed writes may fail its readiness first (role);
	// the memcached check fails once the probes have seen it away for the
	// grace.
	testenv.Eventually(t, 30*time.Second, func() bool {
		code, body := get("/readyz/applier")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "fail memcached: unreachable")
	}, "/readyz/applier never said memcached is away")
	waitCode(t, get, "/readyz", http.StatusServiceUnavailable)
	waitGRPC(health.ServiceApplier, healthpb.HealthCheckResponse_NOT_SERVING)
	for _, path := range []string{"/readyz/api", "/livez", "/healthz"} {
		if code, body := get(path); code != http.StatusOK {
			t.Errorf("%s with memcached away = %d %q, want 200", path, code, body)
		}
	}
	for _, svc := range []string{health.ServiceAPI, ""} {
		if st := grpcStatus(svc); st != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("gRPC health of %q with memcached away = %s, want SERVING", svc, st)
		}
	}
}

// Without a Monitor, a node given Health.GRPC still runs its checker, to
// set the gRPC statuses of its caller API.
func TestGRPCHealthWithoutMonitor(t *testing.T) {
	_, cli := testenv.Etcd(t)
	mc := testenv.StartMemcached(t)
	hs := grpchealth.NewServer()
	hs.SetServingStatus(health.ServiceApplier, healthpb.HealthCheckResponse_NOT_SERVING)
	testenv.StartNode(t, node.Config{
		Etcd: cli, Layout: keyspace.MustNew("t"), NodeID: "n1", Memcached: []string{mc.Addr},
		Health: health.Config{ProbeInterval: 20 * time.Millisecond, GRPC: hs},
	})
	testenv.Eventually(t, 30*time.Second, func() bool {
		resp, err := hs.Check(context.Background(), &healthpb.HealthCheckRequest{Service: health.ServiceApplier})
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
	}, "the applier's gRPC status never was SERVING")
}
