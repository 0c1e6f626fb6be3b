package pool_test

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/inspect"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/monitor"
	"github.com/coordinator-dev/coordinator/pkg/node"
)

// TestLeaderReportsRestartedServer: one of three servers restarts (and
// loses its items); the leader counts it, logs which one, exports it as a
// metric and records it in etcd, where status shows it.
func TestLeaderReportsRestartedServer(t *testing.T) {
	_, cli := testenv.Etcd(t)
	ms, servers := startPool(t, 3)
	const ns = "restart"
	var logs testenv.SyncBuffer
	stats := &memfence.Stats{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testenv.StartNode(t, node.Config{
		Etcd: cli, Layout: keyspace.MustNew(ns), NodeID: "a", Memcached: addrs(servers), Distribution: hashring.Ketama,
		MemcachedStats: stats, RestartCheckInterval: 20 * time.Millisecond,
		Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
		Monitor: &monitor.Config{Listener: ln},
	})
	in, err := inspect.New(cli, ns)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Ctx(t, 90*time.Second)
	metric := func(name string) string {
		resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				return v
			}
		}
		return "absent"
	}
	waitApplied(t, cli, ns, submit(t, cli, ns, "k", 300))
	testenv.Eventually(t, 30*time.Second, func() bool { return stats.RestartChecks.Load() >= 2 }, "the leader does not check its servers")
	if n := stats.Restarts.Load(); n != 0 {
		t.Fatalf("%d restarts reported before any", n)
	}
	// One series per server, each from the start.
	restarts := func(m *testenv.Memcached) string {
		return metric(`coordinator_memcached_restarts_total{server="` + m.Addr + `"}`)
	}
	for _, m := range ms {
		if v := restarts(m); v != "0" {
			t.Fatalf("coordinator_memcached_restarts_total{server=%q} = %s before any restart", m.Addr, v)
		}
	}
	if st, err := in.Status(ctx); err != nil || st.MemcachedRestarts != 0 || st.LastRestart.Server != "" {
		t.Fatalf("status before any restart: %+v, %v", st, err)
	}
	restarted := ms[1]
	oldPid := restarted.Pid()
	before := time.Now()
	restarted.Stop()
	restarted.Start()
	testenv.Eventually(t, 30*time.Second, func() bool { return stats.Restarts.Load() == 1 }, "the restart of %s is not reported", restarted.Addr)
	testenv.Eventually(t, 10*time.Second, func() bool {
		out := logs.String()
		return strings.Contains(out, "memcached server restarted") && strings.Contains(out, "server="+restarted.Addr) &&
			strings.Contains(out, "old_pid="+strconv.Itoa(oldPid))
	}, "no log line names the restarted server; log:\n%s", logs.String())
	var st inspect.Status
	testenv.Eventually(t, 10*time.Second, func() bool {
		st, err = in.Status(ctx)
		return err == nil && st.MemcachedRestarts == 1
	}, "status does not show the restart: %+v, %v", st, err)
	last := st.LastRestart
	if last.Server != restarted.Addr || last.OldPid != oldPid || last.NewPid != restarted.Pid() || last.Term != st.Term ||
		last.Time.Before(before.Add(-time.Second)) || last.Time.After(time.Now()) {
		t.Fatalf("last restart %+v; want %s, pid %d → %d, term %d, after %s", last, restarted.Addr, oldPid, restarted.Pid(), st.Term, before)
	}
	// One restart is reported once.
	checks := stats.RestartChecks.Load()
	testenv.Eventually(t, 30*time.Second, func() bool { return stats.RestartChecks.Load() >= checks+3 }, "the checks stopped")
	if n := stats.Restarts.Load(); n != 1 {
		t.Fatalf("%d restarts reported for one", n)
	}
	for _, m := range ms {
		want := map[bool]string{false: "0", true: "1"}[m == restarted]
		if v := restarts(m); v != want {
			t.Fatalf("coordinator_memcached_restarts_total{server=%q} = %s after one restart of %s, want %s", m.Addr, v, restarted.Addr, want)
		}
	}
	if v, _ := strconv.Atoi(metric("coordinator_memcached_restart_checks_total")); v < int(checks) {
		t.Fatalf("coordinator_memcached_restart_checks_total = %d, want at least %d", v, checks)
	}
	if st, err := in.Status(ctx); err != nil || st.MemcachedRestarts != 1 {
		t.Fatalf("status after the checks: %+v, %v", st, err)
	}
}
