package applier_test

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/internal/tracectx"
	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/node"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// A leader with a tracer applies records of every version: the one whose
// record carries a trace context gets an apply span, a child of the span
// the record names, with its token, keys and server; records of versions 1
// and 2 (no trace context) are applied untraced.
func TestApplyJoinsTheSubmissionsTrace(t *testing.T) {
	e := newEnv(t, ops.Limits{})
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	caller := e.register(t, "svc")

	_, submission := tp.Tracer("submitter").Start(e.ctx, "submission")
	submission.End()
	traced := &ops.Batch{Name: "svc", Incarnation: caller.Incarnation(), ID: "traced",
		Ops:   []ops.Op{ops.Set("t1", []byte("a"), 0), ops.Set("t2", []byte("b"), 0), ops.Set("t1", []byte("c"), 0)},
		Trace: tracectx.FromSpanContext(submission.SpanContext())}
	v2 := &ops.Batch{Name: "svc", Incarnation: caller.Incarnation(), ID: "v2", Ops: []ops.Op{ops.Set("old2", []byte("2"), 0)}}
	v1 := &ops.Batch{Name: "svc", Incarnation: caller.Incarnation(), ID: "v1", Ops: []ops.Op{ops.Set("old1", []byte("1"), 0)}}
	v1rec := v1.Encode()
	v1rec = append([]byte("cb1\x00"), v1rec[8:]...) // the first version's header, without an index
	var tracedRev int64
	for _, r := range []struct {
		b   *ops.Batch
		rec []byte
	}{{traced, traced.Encode()}, {v2, v2.Encode()}, {v1, v1rec}} {
		resp, err := e.cli.Put(e.ctx, e.layout.Batch(r.b.Name, r.b.Incarnation, r.b.ID), string(r.rec))
		if err != nil {
			t.Fatal(err)
		}
		if r.b == traced {
			tracedRev = resp.Header.Revision
		}
	}

	testenv.StartNode(t, node.Config{Etcd: e.cli, Layout: e.layout, NodeID: "n1", Memcached: []string{e.mc.Addr}, TracerProvider: tp})
	tok, err := caller.Set(e.ctx, "after", []byte("ok"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := caller.WaitApplied(e.ctx, tok); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{"t1": "c", "t2": "b", "old2": "2", "old1": "1", "after": "ok"} {
		if v, _ := e.value(t, key); v != want {
			t.Errorf("%s = %q, want %q", key, v, want)
		}
	}
	// The span ends once the leader has read its commit's reply, which may
	// come after WaitApplied saw the commit.
	var applies []tracetest.SpanStub
	testenv.Eventually(t, 10*time.Second, func() bool {
		applies = applies[:0]
		for _, s := range exp.GetSpans() {
			if s.Name == applier.SpanApply {
				applies = append(applies, s)
			}
		}
		return len(applies) > 0
	}, "an apply span")
	if len(applies) != 1 {
		t.Fatalf("%d apply spans, want 1 (the traced batch's)", len(applies))
	}
	s := applies[0]
	if s.Parent.SpanID() != submission.SpanContext().SpanID() || s.SpanContext.TraceID() != submission.SpanContext().TraceID() {
		t.Errorf("apply span's parent %v, want the submission's span %v", s.Parent, submission.SpanContext())
	}
	want := map[attribute.Key]any{
		tokenseq.AttrName: "svc", tokenseq.AttrBatchID: "traced", tokenseq.AttrBatchOps: int64(3),
		tokenseq.AttrTokenRevision: tracedRev, tokenseq.AttrTokenIndex: int64(0),
		applier.AttrTerm: int64(1), applier.AttrWrites: int64(2), applier.AttrSkipped: int64(1),
	}
	got := map[attribute.Key]any{}
	for _, kv := range s.Attributes {
		got[kv.Key] = kv.Value.AsInterface()
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("apply span attribute %s = %v, want %v", k, got[k], v)
		}
	}
	if servers, _ := got[applier.AttrMemcachedServers].([]string); len(servers) != 1 || servers[0] != e.mc.Addr {
		t.Errorf("apply span's servers %v, want [%s]", got[applier.AttrMemcachedServers], e.mc.Addr)
	}
	if rev, _ := got[applier.AttrCommitRevision].(int64); rev <= tracedRev {
		t.Errorf("apply span's commit revision %v, want one after %d", got[applier.AttrCommitRevision], tracedRev)
	}
	if s.SpanKind != trace.SpanKindConsumer || len(s.Events) != 1 || s.Events[0].Name != applier.EventWritten {
		t.Errorf("apply span: kind %v, events %v", s.SpanKind, s.Events)
	}
}
