package topology_test

import (
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/election"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/topology"
)

// Restarts are counted and the latest kept, oldest first, up to
// MaxRecordedRestarts; a failed guard writes nothing and says
// ErrNotLeader.
func TestRecordRestartsCountsAndKeepsTheLatest(t *testing.T) {
	_, cli := testenv.Etcd(t)
	l := keyspace.MustNew("pool")
	ctx := testenv.Ctx(t, 30*time.Second)
	if log, err := topology.ReadRestarts(ctx, cli, l); err != nil || log.Count != 0 || log.Latest() != (topology.RestartEvent{}) {
		t.Fatalf("empty namespace: %+v, %v", log, err)
	}
	// The guard holds while the key "leader" is absent.
	guard := clientv3.Compare(clientv3.Version("leader"), "=", 0)
	at := time.Date(2026, 12, 3, 13, 0, 0, 0, time.UTC)
	n := topology.MaxRecordedRestarts + 3
	for i := range n {
		ev := topology.RestartEvent{Server: "10.0.0.1:11211", OldPid: 100 + i, NewPid: 101 + i, Time: at.Add(time.Duration(i) * time.Second), Term: 2}
		if err := topology.RecordRestarts(ctx, cli, l, guard, []topology.RestartEvent{ev}); err != nil {
			t.Fatal(err)
		}
	}
	log, err := topology.ReadRestarts(ctx, cli, l)
	if err != nil {
		t.Fatal(err)
	}
	if log.Count != int64(n) || len(log.Last) != topology.MaxRecordedRestarts {
		t.Fatalf("count %d, %d kept; want %d and %d", log.Count, len(log.Last), n, topology.MaxRecordedRestarts)
	}
	if got := log.Latest(); got.OldPid != 100+n-1 || !got.Time.Equal(at.Add(time.Duration(n-1)*time.Second)) || log.Last[0].OldPid != 103 {
		t.Fatalf("latest %+v, first kept %+v", got, log.Last[0])
	}
	if _, err := cli.Put(ctx, "leader", "someone else"); err != nil {
		t.Fatal(err)
	}
	err = topology.RecordRestarts(ctx, cli, l, guard, []topology.RestartEvent{{Server: "x:1", OldPid: 1, NewPid: 2}})
	if !errors.Is(err, election.ErrNotLeader) {
		t.Fatalf("with a failed guard: %v, want ErrNotLeader", err)
	}
	if again, _ := topology.ReadRestarts(ctx, cli, l); again.Count != int64(n) {
		t.Fatalf("a failed guard wrote: count %d", again.Count)
	}
	// A value that does not decode is reported, and replaced by the next
	// record.
	if _, err := cli.Put(ctx, l.MemcachedRestarts(), "{"); err != nil {
		t.Fatal(err)
	}
	if _, err := topology.ReadRestarts(ctx, cli, l); !errors.Is(err, topology.ErrCorrupt) {
		t.Fatalf("corrupt record: %v, want ErrCorrupt", err)
	}
	if _, err := cli.Delete(ctx, "leader"); err != nil {
		t.Fatal(err)
	}
	if err := topology.RecordRestarts(ctx, cli, l, guard, []topology.RestartEvent{{Server: "x:1", OldPid: 1, NewPid: 2}}); err != nil {
		t.Fatal(err)
	}
	if log, err := topology.ReadRestarts(ctx, cli, l); err != nil || log.Count != 1 {
		t.Fatalf("after a corrupt record: %+v, %v", log, err)
	}
}
