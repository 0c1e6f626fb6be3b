package tokenseq_test

import (
	"bytes"
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/registry"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// BenchmarkSubmit measures submissions of one 100-byte set against an
// embedded etcd, serially and from 64 goroutines: with group commit (the
// default), with every submission in its own guarded transaction, and next to
// a raw etcd put of the same value on the same etcd. No leader runs, so the
// batches stay pending.
//
//	go test -run '^$' -bench Submit -benchtime 3s ./pkg/tokenseq/
func BenchmarkSubmit(b *testing.B) {
	_, cli := testenv.Etcd(b)
	layout := keyspace.MustNew("bench")
	sub := newSubmitter(b, tokenseq.SubmitterConfig{Etcd: cli, Layout: layout})
	ctx := testenv.Ctx(b, 30*time.Minute)
	inc, err := registry.New(cli, layout).Register(ctx, "b", registry.RegisterConfig{TTL: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { inc.Close(context.Background()) })
	value := bytes.Repeat([]byte("v"), 100)
	batch := []ops.Op{ops.Set("k", value, 0)}
	submit := func() error {
		_, err := sub.Submit(ctx, "b", inc.Incarnation, "", batch)
		return err
	}
	alone := newSubmitter(b, tokenseq.SubmitterConfig{Etcd: cli, Layout: layout, MaxGroupBatches: 1})
	submitAlone := func() error {
		_, err := alone.Submit(ctx, "b", inc.Incarnation, "", batch)
		return err
	}
	put := func() error {
		_, err := cli.Put(ctx, layout.Prefix()+"raw", string(value))
		return err
	}
	for _, c := range []struct {
		name string
		op   func() error
	}{{"submit", submit}, {"submit-no-group-commit", submitAlone}, {"etcd-put", put}} {
		b.Run(c.name+"/serial", func(b *testing.B) {
			for b.Loop() {
				if err := c.op(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
		b.Run(c.name+"/parallel-64", func(b *testing.B) {
			b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := c.op(); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}
