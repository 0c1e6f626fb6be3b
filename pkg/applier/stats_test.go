package applier_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/node"
	"github.com/coordinator-dev/coordinator/pkg/ops"
)

// The counters and gauges metrics read follow the applier's work: rounds,
// commits and their hooks, the watermark and etcd's revision, the backlog
// and its age while memcached is away (with the failed writes reported),
// and an empty backlog once all is applied; a standby follows the
// watermark.
func TestStatsFollowTheWork(t *testing.T) {
	e := newEnv(t, ops.Limits{})
	var rounds, commits atomic.Int64
	var mu sync.Mutex
	var memErrs []error
	hooks := applier.Hooks{
		Round:  func(batches int, took time.Duration) { rounds.Add(1) },
		Commit: func(batches int, took time.Duration) { commits.Add(int64(batches)) },
		MemcachedError: func(err error) {
			mu.Lock()
			memErrs = append(memErrs, err)
			mu.Unlock()
		},
	}
	lead := e.startNode(t, "n1", hooks, ops.Limits{})
	testenv.Eventually(t, 30*time.Second, lead.Stats.Running.Load, "the applier never ran")
	standby := testenv.StartNode(t, node.Config{Etcd: e.cli, Layout: e.layout, NodeID: "n2", Memcached: []string{e.mc.Addr}})
	caller := e.register(t, "svc")

	const n = 10
	var tokRev int64
	for i := range n {
		tok, err := caller.Set(e.ctx, fmt.Sprintf("k%d", i), []byte("v"), 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := caller.WaitApplied(e.ctx, tok); err != nil {
			t.Fatal(err)
		}
		tokRev = tok.Revision
	}
	st := lead.Stats
	testenv.Eventually(t, 10*time.Second, func() bool { return st.PendingBatches.Load() == 0 }, "batches left pending")
	switch {
	case st.Rounds.Load() < 1 || rounds.Load() != int64(st.Rounds.Load()):
		t.Errorf("Rounds %d, Round hook %d", st.Rounds.Load(), rounds.Load())
	case commits.Load() < n:
		t.Errorf("Commit hook saw %d batches, want at least %d", commits.Load(), n)
	case st.Watermark.Load() < tokRev || st.EtcdRevision.Load() < st.Watermark.Load():
		t.Errorf("Watermark %d, EtcdRevision %d, last token at %d", st.Watermark.Load(), st.EtcdRevision.Load(), tokRev)
	case st.PendingOps.Load() != 0 || st.OldestPending.Load() != 0:
		t.Errorf("PendingOps %d, OldestPending %d with nothing pending", st.PendingOps.Load(), st.OldestPending.Load())
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return standby.Stats.Watermark.Load() >= tokRev },
		"the standby's watermark never reached %d", tokRev)
	if standby.Stats.Running.Load() || standby.Stats.PendingBatches.Load() != 0 {
		t.Errorf("standby: Running %v, PendingBatches %d", standby.Stats.Running.Load(), standby.Stats.PendingBatches.Load())
	}

	e.mc.Stop()
	tok, err := caller.Set(e.ctx, "k0", []byte("later"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := caller.Delete(e.ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(memErrs) > 0 && st.PendingBatches.Load() == 2 && st.PendingOps.Load() == 2
	}, "memcached errors and two pending batches never showed (pending %d)", st.PendingBatches.Load())
	if age := time.Since(time.Unix(0, st.OldestPending.Load())); st.OldestPending.Load() == 0 || age > 30*time.Second {
		t.Errorf("OldestPending is %v old", age)
	}
	mu.Lock()
	for _, err := range memErrs {
		if errors.Is(err, memfence.ErrFenced) {
			t.Errorf("memcached away reported as fenced: %v", err)
		}
		var se *memfence.ServerError
		if !errors.As(err, &se) || se.Server != e.mc.Addr {
			t.Errorf("memcached error %v does not name the server %s", err, e.mc.Addr)
		}
	}
	mu.Unlock()
	e.mc.Start()
	if err := caller.WaitApplied(e.ctx, tok); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return st.PendingBatches.Load() == 0 && st.OldestPending.Load() == 0 },
		"the backlog never emptied")
	if st.Fenced.Load() != 0 {
		t.Errorf("Fenced = %d without a newer leader", st.Fenced.Load())
	}
}
