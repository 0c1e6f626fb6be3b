package main

import (
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/topology"
)

// status shows the memcached restarts recorded in etcd: the count, and the
// latest one (server@time in a table, every field in JSON).
func TestStatusShowsMemcachedRestarts(t *testing.T) {
	env := startEtcd(t)
	ctx := testenv.Ctx(t, 30*time.Second)
	l := keyspace.MustNew(keyspace.DefaultNamespace)
	at := time.Date(2026, 12, 3, 13, 40, 0, 0, time.UTC)
	events := []topology.RestartEvent{
		{Server: "10.0.0.1:11211", OldPid: 10, NewPid: 11, Time: at, Term: 3},
		{Server: "10.0.0.2:11211", OldPid: 20, NewPid: 21, Time: at.Add(time.Minute), Term: 4},
	}
	always := clientv3.Compare(clientv3.Version("no such key"), "=", 0)
	if err := topology.RecordRestarts(ctx, env.cli, l, always, events); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, nil, env.args("status", "-o", "json")...)
	if r.code != exitOK {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	var out struct {
		Restarts int `json:"memcached_restarts"`
		Last     *struct {
			Server string `json:"server"`
			OldPid int    `json:"old_pid"`
			NewPid int    `json:"new_pid"`
			Time   string `json:"time"`
			Term   uint64 `json:"term"`
		} `json:"last_restart"`
	}
	mustJSON(t, r.stdout, &out)
	if out.Restarts != 2 || out.Last == nil || out.Last.Server != "10.0.0.2:11211" || out.Last.OldPid != 20 ||
		out.Last.NewPid != 21 || out.Last.Time != "2026-12-03T13:41:00Z" || out.Last.Term != 4 {
		t.Fatalf("status -o json:\n%s", r.stdout)
	}
	r = runCLI(t, nil, env.args("status")...)
	lines := nonEmptyLines(r.stdout)
	if len(lines) != 2 || !strings.HasSuffix(strings.Join(strings.Fields(lines[0]), " "), "RESTARTS LAST RESTART") {
		t.Fatalf("want a header ending in RESTARTS, LAST RESTART, and a row:\n%s", r.stdout)
	}
	if got := strings.Fields(lines[1]); len(got) < 2 || got[len(got)-2] != "2" || got[len(got)-1] != "10.0.0.2:11211@2026-12-03T13:41:00Z" {
		t.Errorf("status row = %q", lines[1])
	}
}
