package applier

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// The tracing of the write path allocates nothing without a tracer, nor
// with one for batches whose records carry no trace context.
func TestUntracedApplyAllocatesNothing(t *testing.T) {
	items := []pending{
		{tok: tokenseq.Token{Revision: 5}, batch: &ops.Batch{Name: "n", Ops: []ops.Op{ops.Set("k", []byte("v"), 0), ops.Delete("d")}}},
		{tok: tokenseq.Token{Revision: 6}, bad: "corrupt"},
	}
	newest := newestPerKey(items)
	ctx := context.Background()
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(ctx)
	for _, a := range []*applier{{}, {tracer: tp.Tracer(tracerName)}} {
		if n := testing.AllocsPerRun(100, func() {
			a.startApplies(ctx, items, newest)
			a.writtenApplies(items, nil)
			a.endApplies(items, 7, nil)
		}); n != 0 {
			t.Errorf("tracer %v: %v allocations per round, want none", a.tracer, n)
		}
	}
}
