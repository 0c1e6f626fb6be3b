package applier_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/node"
)

// BenchmarkApplyBatch measures the leader's write path end to end: b.N
// operations (one 100-byte set per batch) are submitted while no leader
// runs, then a node is started and the clock runs until the applied
// watermark covers the last of them. The time includes the node's election
// and its read of the whole backlog. "keys-1000" spreads the operations over
// 1000 keys, so the replay writes only the newest per key; "distinct-keys"
// gives every operation a key of its own, so every one is written to
// memcached (gets, then add). Both submit under one registration name, so
// the applier writes them one after the other; "distinct-keys-names-16"
// spreads distinct keys over 16 names, whose writes the applier sends
// together (up to its write concurrency per pipeline step: the default 8, 1,
// which writes in token order across names, and 16).
//
//	go test -run '^$' -bench ApplyBatch -benchtime 20000x ./pkg/applier/
func BenchmarkApplyBatch(b *testing.B) {
	_, cli := testenv.Etcd(b)
	mc := testenv.StartMemcached(b)
	var seq atomic.Int64
	value := bytes.Repeat([]byte("v"), 100)
	for _, c := range []struct {
		name  string
		keys  int // 0: distinct
		names int
		steps int // WriteConcurrency; 0: the default
	}{
		{"keys-1000", 1000, 1, 0}, {"distinct-keys", 0, 1, 0}, {"distinct-keys-names-16", 0, 16, 0},
		{"distinct-keys-names-16-write-concurrency-1", 0, 16, 1}, {"distinct-keys-names-16-write-concurrency-16", 0, 16, 16},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.StopTimer()
			ns := fmt.Sprintf("b%d", seq.Add(1))
			layout := keyspace.MustNew(ns)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
			defer cancel()
			cl, err := client.New(client.Config{Etcd: cli, Namespace: ns})
			if err != nil {
				b.Fatal(err)
			}
			callers := make([]*client.Caller, c.names)
			for i := range callers {
				caller, err := cl.Register(ctx, fmt.Sprintf("bench-%d", i), client.RegisterConfig{TTL: time.Minute})
				if err != nil {
					b.Fatal(err)
				}
				defer caller.Close(context.Background())
				callers[i] = caller
			}
			key := func(i int) string {
				if c.keys == 0 {
					return fmt.Sprintf("%s-%d", ns, i)
				}
				return fmt.Sprintf("%s-%d", ns, i%c.keys)
			}
			last := submitBacklog(ctx, b, callers, key, value)
			if b.Failed() {
				return
			}

			stats := &applier.Stats{}
			nctx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			b.StartTimer()
			go func() {
				done <- node.Run(nctx, node.Config{Etcd: cli, Layout: layout, NodeID: "bench", LeaseTTL: 5 * time.Second,
					Memcached: []string{mc.Addr}, WriteConcurrency: c.steps, Logger: testenv.Logger(), Stats: stats})
			}()
			if err := cl.WaitApplied(ctx, client.Token{Revision: last}); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			stop()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			n := float64(b.N)
			b.ReportMetric(n/b.Elapsed().Seconds(), "ops/s")
			b.ReportMetric(float64(stats.Applied.Load())/n, "memcached-writes/op")
			b.ReportMetric(float64(stats.Commits.Load())/n, "etcd-commits/op")
		})
	}
}

// submitBacklog submits b.N sets of value, the i-th to key(i) by
// callers[i%len(callers)], from 16 goroutines, and returns the highest
// revision of their tokens.
func submitBacklog(ctx context.Context, b *testing.B, callers []*client.Caller, key func(int) string, value []byte) int64 {
	var next, last atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= b.N {
					return
				}
				tok, err := callers[i%len(callers)].Set(ctx, key(i), value, 0)
				if err != nil {
					b.Error(err)
					return
				}
				for cur := last.Load(); tok.Revision > cur && !last.CompareAndSwap(cur, tok.Revision); cur = last.Load() {
				}
			}
		})
	}
	wg.Wait()
	return last.Load()
}
