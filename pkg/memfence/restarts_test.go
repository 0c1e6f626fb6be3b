package memfence_test

import (
	"testing"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
)

func TestCheckRestartsFindsTheRestartedServer(t *testing.T) {
	a, b := testenv.StartMemcached(t), testenv.StartMemcached(t)
	stats := &memfence.Stats{}
	w, err := memfence.New(memfence.Config{Servers: []string{a.Addr, b.Addr}, Stats: stats})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	ctx := t.Context()
	if rs, err := w.CheckRestarts(ctx); err != nil || len(rs) != 0 {
		t.Fatalf("first check: %v, %v", rs, err)
	}
	if err := w.Set(ctx, "k", []byte("v"), 0, 1); err != nil {
		t.Fatal(err)
	}
	if rs, err := w.CheckRestarts(ctx); err != nil || len(rs) != 0 {
		t.Fatalf("check without a restart: %v, %v", rs, err)
	}
	oldPid := b.Pid()
	b.Stop()
	if _, err := w.CheckRestarts(ctx); err == nil {
		t.Fatal("a stopped server is not reported")
	}
	b.Start()
	rs, err := w.CheckRestarts(ctx)
	if err != nil || len(rs) != 1 || rs[0].Addr != b.Addr || rs[0].Before.Pid != oldPid || rs[0].After.Pid != b.Pid() {
		t.Fatalf("after restarting %s (pid %d, now %d): %+v, %v", b.Addr, oldPid, b.Pid(), rs, err)
	}
	if rs, err := w.CheckRestarts(ctx); err != nil || len(rs) != 0 {
		t.Fatalf("check after the reported restart: %v, %v", rs, err)
	}
	if stats.Restarts.Load() != 1 || stats.RestartChecks.Load() != 4 {
		t.Fatalf("stats: %d restarts, %d checks", stats.Restarts.Load(), stats.RestartChecks.Load())
	}
	if got := stats.ServerRestarts(); len(got) != 1 || got[b.Addr] != 1 {
		t.Fatalf("restarts by server: %v, want %s: 1", got, b.Addr)
	}
	st, err := w.ServerStats(ctx)
	if err != nil || len(st) != 2 || st[0].Pid != a.Pid() {
		t.Fatalf("ServerStats: %+v, %v", st, err)
	}
}

// A restart is counted under the server's address as configured, which
// need not be the resolved one.
func TestRestartsCountedByConfiguredName(t *testing.T) {
	m := testenv.StartMemcached(t)
	name := byName(t, m.Addr)
	stats := &memfence.Stats{}
	w, err := memfence.New(memfence.Config{Servers: []string{name}, Stats: stats})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	if _, err := w.CheckRestarts(t.Context()); err != nil {
		t.Fatal(err)
	}
	m.Stop()
	if _, err := w.CheckRestarts(t.Context()); err == nil {
		t.Fatal("a stopped server is not reported")
	}
	m.Start()
	rs, err := w.CheckRestarts(t.Context())
	if err != nil || len(rs) != 1 || rs[0].Addr != m.Addr || rs[0].After.Name != name {
		t.Fatalf("after a restart: %+v, %v; want %s named %s", rs, err, m.Addr, name)
	}
	if got := stats.ServerRestarts(); len(got) != 1 || got[name] != 1 {
		t.Fatalf("restarts by server: %v, want %s: 1", got, name)
	}
}
