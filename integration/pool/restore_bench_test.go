package pool_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/node"
	"github.com/coordinator-dev/coordinator/pkg/ops"
)

// BenchmarkDrainRestoreOnRestart measures the cost of RestoreOnRestart: a
// leader drains a backlog of benchDrainOps sets of distinct keys (100-byte
// values, batches of 250) over three servers, without and with it, in the
// same run; it reports applied ops/s.
func BenchmarkDrainRestoreOnRestart(b *testing.B) {
	const benchDrainOps = 20000
	_, cli := testenv.Etcd(b)
	_, servers := startPool(b, 3)
	value := make([]byte, 100)
	for _, restore := range []bool{false, true} {
		b.Run(fmt.Sprintf("restore=%v", restore), func(b *testing.B) {
			var total time.Duration
			run := 0
			for b.Loop() {
				b.StopTimer()
				run++
				ns := fmt.Sprintf("bench-%v-%d", restore, run)
				c, err := client.New(client.Config{Etcd: cli, Namespace: ns})
				if err != nil {
					b.Fatal(err)
				}
				ctx := testenv.Ctx(b, 300*time.Second)
				caller, err := c.Register(ctx, "bench", client.RegisterConfig{})
				if err != nil {
					b.Fatal(err)
				}
				var tok client.Token
				batch := make([]ops.Op, 0, 250)
				for i := range benchDrainOps {
					batch = append(batch, ops.Set(fmt.Sprintf("bench-%d", i), value, 0))
					if len(batch) == cap(batch) {
						if tok, err = caller.Submit(ctx, batch...); err != nil {
							b.Fatal(err)
						}
						batch = batch[:0]
					}
				}
				b.StartTimer()
				start := time.Now()
				n := testenv.StartNode(b, node.Config{
					Etcd: cli, Layout: keyspace.MustNew(ns), NodeID: "a", Memcached: addrs(servers),
					Distribution: hashring.Ketama, RestoreOnRestart: restore,
				})
				if err := c.WaitApplied(ctx, tok); err != nil {
					b.Fatal(err)
				}
				total += time.Since(start)
				b.StopTimer()
				n.Stop(b)
				c.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(benchDrainOps*run)/total.Seconds(), "ops/s")
		})
	}
}
