package pool_test

import (
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/node"
)

// TestLeaderReportsRestartedServer: one of three servers restarts (and
// loses its items); the leader counts it and logs which one.
func TestLeaderReportsRestartedServer(t *testing.T) {
	_, cli := testenv.Etcd(t)
	ms, servers := startPool(t, 3)
	const ns = "restart"
	var logs testenv.SyncBuffer
	stats := &memfence.Stats{}
	testenv.StartNode(t, node.Config{
		Etcd: cli, Layout: keyspace.MustNew(ns), NodeID: "a", Memcached: addrs(servers), Distribution: hashring.Ketama,
		MemcachedStats: stats, RestartCheckInterval: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	waitApplied(t, cli, ns, submit(t, cli, ns, "k", 300))
	testenv.Eventually(t, 30*time.Second, func() bool { return stats.RestartChecks.Load() >= 2 }, "the leader does not check its servers")
	if n := stats.Restarts.Load(); n != 0 {
		t.Fatalf("%d restarts reported before any", n)
	}
	restarted := ms[1]
	oldPid := restarted.Pid()
	restarted.Stop()
	restarted.Start()
	testenv.Eventually(t, 30*time.Second, func() bool { return stats.Restarts.Load() == 1 }, "the restart of %s is not reported", restarted.Addr)
	testenv.Eventually(t, 10*time.Second, func() bool {
		out := logs.String()
		return strings.Contains(out, "memcached server restarted") && strings.Contains(out, "server="+restarted.Addr) &&
			strings.Contains(out, "old_pid="+strconv.Itoa(oldPid))
	}, "no log line names the restarted server; log:\n%s", logs.String())
	// One restart is reported once.
	checks := stats.RestartChecks.Load()
	testenv.Eventually(t, 30*time.Second, func() bool { return stats.RestartChecks.Load() >= checks+3 }, "the checks stopped")
	if n := stats.Restarts.Load(); n != 1 {
		t.Fatalf("%d restarts reported for one", n)
	}
}
