package tokenseq_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/internal/tracectx"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// tracerProvider records every span in an in-memory exporter.
func tracerProvider(t *testing.T) (*sdktrace.TracerProvider, *tracetest.InMemoryExporter) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, exp
}

// record reads and decodes the record of req's batch.
func (f *fixture) record(t *testing.T, req tokenseq.Request) (*ops.Batch, []byte) {
	t.Helper()
	resp, err := f.cli.Get(f.ctx, f.layout.Batch(req.Name, req.Incarnation, req.ID))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("batch %s: %v, %v", req.ID, resp, err)
	}
	b, err := ops.DecodeBatch(resp.Kvs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	return b, resp.Kvs[0].Value
}

// Submissions of three traces that share a transaction: one transaction
// span, a child of the first member's span, linking all three; each
// submission's span, a child of its caller's, has joined it (event and
// link), and its record carries that span's trace context.
func TestGroupTransactionSpanLinksItsMembers(t *testing.T) {
	f := newFixture(t)
	tp, exp := tracerProvider(t)
	sub := newSubmitter(t, tokenseq.SubmitterConfig{Etcd: f.cli, Layout: f.layout, TracerProvider: tp})
	callers := make([]trace.Span, 3)
	reqs := make([]tokenseq.Request, 3)
	toks := make([]tokenseq.Token, 3)
	errs := make([]error, 3)
	release := tokenseq.HoldSlots(sub)
	var wg sync.WaitGroup
	for i := range reqs {
		inc := f.register(t, fmt.Sprintf("caller-%d", i))
		reqs[i] = tokenseq.Request{Name: inc.Name, Incarnation: inc.Incarnation, ID: fmt.Sprintf("id-%d", i),
			Ops: []ops.Op{ops.Set("k", []byte("v"), 0), ops.Delete("d")}}
		var ctx context.Context
		ctx, callers[i] = tp.Tracer("caller").Start(f.ctx, "caller")
		wg.Go(func() { toks[i], errs[i] = sub.SubmitRequest(ctx, reqs[i]) })
		// Queued in this order, so the first caller's span is the parent.
		testenv.Eventually(t, 10*time.Second, func() bool { return tokenseq.Queued(sub) == i+1 }, "submission %d queued", i)
	}
	release()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("submission %d: %v", i, err)
		}
		if toks[i].Revision != toks[0].Revision || toks[i].Index != uint32(i) {
			t.Fatalf("tokens %v: want one transaction", toks)
		}
	}

	var groups []tracetest.SpanStub
	submits := map[trace.SpanID]tracetest.SpanStub{}
	for _, s := range exp.GetSpans() {
		switch s.Name {
		case tokenseq.SpanGroupTxn:
			groups = append(groups, s)
		case tokenseq.SpanSubmit:
			submits[s.Parent.SpanID()] = s
		}
	}
	if len(groups) != 1 || len(submits) != 3 {
		t.Fatalf("%d transaction spans and %d submission spans, want 1 and 3", len(groups), len(submits))
	}
	g := groups[0]
	if g.SpanKind != trace.SpanKindClient || attr(g.Attributes, tokenseq.AttrTokenRevision) != toks[0].Revision ||
		attr(g.Attributes, tokenseq.AttrGroupBatches) != int64(3) || attr(g.Attributes, tokenseq.AttrGroupSucceeded) != true {
		t.Errorf("transaction span: %v %v", g.SpanKind, g.Attributes)
	}
	if len(g.Links) != 3 {
		t.Fatalf("transaction span links %d spans, want 3", len(g.Links))
	}
	for i, c := range callers {
		s, ok := submits[c.SpanContext().SpanID()]
		if !ok || s.SpanContext.TraceID() != c.SpanContext().TraceID() {
			t.Fatalf("submission %d: no span in its caller's trace", i)
		}
		if s.SpanKind != trace.SpanKindProducer || attr(s.Attributes, tokenseq.AttrName) != reqs[i].Name ||
			attr(s.Attributes, tokenseq.AttrBatchOps) != int64(2) || attr(s.Attributes, tokenseq.AttrTokenRevision) != toks[i].Revision ||
			attr(s.Attributes, tokenseq.AttrTokenIndex) != int64(i) {
			t.Errorf("submission %d span: %v %v", i, s.SpanKind, s.Attributes)
		}
		if !g.Links[i].SpanContext.Equal(s.SpanContext) || attr(g.Links[i].Attributes, tokenseq.AttrTokenIndex) != int64(i) {
			t.Errorf("transaction span's link %d: %+v, want submission %d's span", i, g.Links[i], i)
		}
		if len(s.Events) != 1 || s.Events[0].Name != tokenseq.EventJoined || len(s.Links) != 1 || !s.Links[0].SpanContext.Equal(g.SpanContext) {
			t.Errorf("submission %d span: events %v, links %v; want it to have joined the transaction", i, s.Events, s.Links)
		}
		b, rec := f.record(t, reqs[i])
		if sc := tracectx.SpanContext(b.Trace); sc.TraceID() != s.SpanContext.TraceID() || sc.SpanID() != s.SpanContext.SpanID() {
			t.Errorf("submission %d record carries %+v, want its span %v", i, b.Trace, s.SpanContext)
		}
		if string(rec[:3]) != "cb3" {
			t.Errorf("submission %d record header %q, want cb3", i, rec[:4])
		}
		c.End()
	}
	if first := submits[callers[0].SpanContext().SpanID()]; g.Parent.SpanID() != first.SpanContext.SpanID() {
		t.Errorf("transaction span's parent %v, want the first member's span %v", g.Parent.SpanID(), first.SpanContext.SpanID())
	}
}

// Without a tracer, or for a caller whose trace is not sampled, nothing is
// traced and the record is the version 2 record every node reads.
func TestUntracedSubmissionsStoreVersion2Records(t *testing.T) {
	f := newFixture(t)
	tp, exp := tracerProvider(t)
	traced := newSubmitter(t, tokenseq.SubmitterConfig{Etcd: f.cli, Layout: f.layout, TracerProvider: tp})
	inc := f.register(t, "a")
	sampled, span := tp.Tracer("caller").Start(f.ctx, "caller")
	defer span.End()
	unsampled := trace.ContextWithRemoteSpanContext(f.ctx, span.SpanContext().WithTraceFlags(0))
	for i, c := range []struct {
		sub *tokenseq.Submitter
		ctx context.Context
	}{{f.sub, sampled}, {traced, unsampled}} {
		req := tokenseq.Request{Name: inc.Name, Incarnation: inc.Incarnation, ID: fmt.Sprintf("id-%d", i), Ops: []ops.Op{ops.Delete("k")}}
		if _, err := c.sub.SubmitRequest(c.ctx, req); err != nil {
			t.Fatal(err)
		}
		if b, rec := f.record(t, req); !b.Trace.IsZero() || string(rec[:3]) != "cb2" {
			t.Errorf("case %d: record %q carries %+v, want a cb2 record without a trace context", i, rec[:4], b.Trace)
		}
	}
	if spans := exp.GetSpans(); len(spans) != 0 {
		t.Errorf("spans %v, want none", spans.Snapshots())
	}
}

// attr returns the value of key among kvs, nil when it is not there.
func attr(kvs []attribute.KeyValue, key attribute.Key) any {
	for _, kv := range kvs {
		if kv.Key == key {
			return kv.Value.AsInterface()
		}
	}
	return nil
}
