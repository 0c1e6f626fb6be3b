package readback_test

import (
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/node"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/readback"
)

// TestReadbackCost measures the leader's applied rate with read-back off
// and at its default rate, in one run: a backlog of 50,000 operations is
// submitted while no node runs, then a node applies it; the two settings
// take turns, three runs each, and the medians are compared. Run on demand
// (BENCHMARKS.md):
//
//	COORDINATOR_READBACK_COST=1 go test -run TestReadbackCost -v ./pkg/readback
func TestReadbackCost(t *testing.T) {
	if os.Getenv("COORDINATOR_READBACK_COST") == "" {
		t.Skip("a measurement: set COORDINATOR_READBACK_COST=1 to run it")
	}
	const n, per = 50000, 250
	_, cli := testenv.Etcd(t)
	m := testenv.StartMemcached(t)
	rates := map[float64][]float64{}
	for run := range 6 {
		rate := []float64{0, readback.DefaultRate}[run%2]
		ns := fmt.Sprintf("cost-%d", run)
		c, err := client.New(client.Config{Etcd: cli, Namespace: ns})
		if err != nil {
			t.Fatal(err)
		}
		ctx := testenv.Ctx(t, 5*time.Minute)
		caller, err := c.Register(ctx, "w", client.RegisterConfig{})
		if err != nil {
			t.Fatal(err)
		}
		var tok client.Token
		for b := range n / per {
			batch := make([]ops.Op, per)
			for i := range batch {
				k := fmt.Sprintf("k-%d", b*per+i)
				batch[i] = ops.Set(k, []byte("value-of-"+k), 0)
			}
			if tok, err = caller.Submit(ctx, batch...); err != nil {
				t.Fatal(err)
			}
		}
		st, rb := &applier.Stats{}, &readback.Stats{}
		nd := testenv.StartNode(t, node.Config{Etcd: cli, Layout: keyspace.MustNew(ns), NodeID: "a", Memcached: []string{m.Addr},
			Stats: st, ReadbackRate: rate, ReadbackStats: rb})
		testenv.Eventually(t, time.Minute, func() bool { return st.Applied.Load() > 0 }, "the node applied nothing")
		start := time.Now()
		if err := c.WaitApplied(ctx, tok); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		nd.Stop(t)
		c.Close()
		rates[rate] = append(rates[rate], float64(n)/took.Seconds())
		t.Logf("read-back %.2f: %d operations in %s, %.0f ops/s (read back: ok %d, dropped %d)", rate, n, took.Round(time.Millisecond),
			float64(n)/took.Seconds(), rb.Count(readback.OK), rb.Dropped(readback.DropQueueFull)+rb.Dropped(readback.DropSuperseded))
	}
	median := func(v []float64) float64 { slices.Sort(v); return v[len(v)/2] }
	off, on := median(rates[0]), median(rates[readback.DefaultRate])
	t.Logf("median applied rate: off %.0f ops/s, at %.2f %.0f ops/s (%+.1f%%)", off, readback.DefaultRate, on, 100*(on-off)/off)
}
