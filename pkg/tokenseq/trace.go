package tokenseq

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/coordinator-dev/coordinator/internal/tracectx"
	"github.com/coordinator-dev/coordinator/pkg/ops"
)

// Tracing (SubmitterConfig.TracerProvider).
//
// A submission is a producer span, SpanSubmit, a child of the caller's span
// (the API call's). Its trace context goes into the batch's record when it
// is sampled, so that the leader's apply of the batch (package applier) is
// a consumer span in the same trace, a child of it.
//
// Submissions share transactions (group commit), and a span has one
// parent: each transaction is one client span, SpanGroupTxn, a child of
// its first traced member's span, with a link to every traced member's
// span; each member's span gets an event and a link back to it when it
// joins the transaction, so that its wait in the queue (the time before
// the event) and the transaction it joined show in its own trace. A
// transaction without a traced member makes no span.
//
// Without a TracerProvider none of this runs: the submission path only
// tests a nil tracer.

// Span names.
const (
	// SpanSubmit is the span of one submission, from its validation to its
	// answer, queue and retries included.
	SpanSubmit = "coordinator.submit"
	// SpanGroupTxn is the span of one accepting transaction (and, when it
	// failed, of the read that settles its members).
	SpanGroupTxn = "coordinator.group_txn"
	// EventJoined is the event on a submission's span when a transaction
	// takes it.
	EventJoined = "joined group transaction"
)

// Attribute keys of the spans; package applier's spans use them too.
const (
	// AttrName is the registration name a batch was submitted under.
	AttrName = attribute.Key("coordinator.name")
	// AttrIncarnation is the incarnation a batch was submitted under.
	AttrIncarnation = attribute.Key("coordinator.incarnation")
	// AttrBatchID is a batch's id.
	AttrBatchID = attribute.Key("coordinator.batch.id")
	// AttrBatchOps is the number of operations (keys written) of a batch.
	AttrBatchOps = attribute.Key("coordinator.batch.ops")
	// AttrTokenRevision is a token's revision: the revision of the
	// transaction that accepted the batch.
	AttrTokenRevision = attribute.Key("coordinator.token.revision")
	// AttrTokenIndex is a token's index: the batch's position in that
	// transaction.
	AttrTokenIndex = attribute.Key("coordinator.token.index")
	// AttrGroupBatches is the number of batches of a transaction.
	AttrGroupBatches = attribute.Key("coordinator.group.batches")
	// AttrGroupSucceeded says whether a transaction's compares held (its
	// batches were stored); a failed one's members are settled by a read.
	AttrGroupSucceeded = attribute.Key("coordinator.group.succeeded")
)

// tracerName is the instrumentation scope of the spans.
const tracerName = "github.com/coordinator-dev/coordinator/pkg/tokenseq"

// startSubmit starts the span of req's submission when s traces; it
// returns ctx and nil otherwise.
func (s *Submitter) startSubmit(ctx context.Context, req Request) (context.Context, trace.Span) {
	if s.tracer == nil {
		return ctx, nil
	}
	return s.tracer.Start(ctx, SpanSubmit, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(
		AttrName.String(req.Name), AttrIncarnation.Int64(req.Incarnation), AttrBatchID.String(req.ID),
		AttrBatchOps.Int(len(req.Ops))))
}

// endSubmit ends a submission's span with its outcome.
func endSubmit(span trace.Span, tok Token, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	} else {
		span.SetAttributes(AttrTokenRevision.Int64(tok.Revision), AttrTokenIndex.Int64(int64(tok.Index)))
	}
	span.End()
}

// startGroupTxn starts the span of g's transaction when a member of g is
// traced, and marks each traced member's span as having joined it; it
// returns ctx and nil otherwise.
func (s *Submitter) startGroupTxn(ctx context.Context, g []*submission) (context.Context, trace.Span) {
	if s.tracer == nil {
		return ctx, nil
	}
	var (
		parent trace.Span
		links  []trace.Link
	)
	for i, c := range g {
		if c.span == nil {
			continue
		}
		if parent == nil {
			parent = c.span
		}
		links = append(links, trace.Link{SpanContext: c.span.SpanContext(),
			Attributes: []attribute.KeyValue{AttrTokenIndex.Int(i)}})
	}
	if parent == nil {
		return ctx, nil
	}
	ctx, span := s.tracer.Start(trace.ContextWithSpan(ctx, parent), SpanGroupTxn,
		trace.WithSpanKind(trace.SpanKindClient), trace.WithLinks(links...),
		trace.WithAttributes(attribute.String("db.system.name", "etcd"), attribute.String("db.operation.name", "txn"),
			AttrGroupBatches.Int(len(g))))
	joined := span.SpanContext()
	for i, c := range g {
		if c.span != nil {
			c.span.AddEvent(EventJoined, trace.WithAttributes(AttrGroupBatches.Int(len(g)), AttrTokenIndex.Int(i)))
			c.span.AddLink(trace.Link{SpanContext: joined})
		}
	}
	return ctx, span
}

// endGroupTxn ends a transaction's span: rev is the revision the
// transaction was answered at, zero when err says it was not.
func endGroupTxn(span trace.Span, rev int64, succeeded bool, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	} else {
		span.SetAttributes(AttrTokenRevision.Int64(rev), AttrGroupSucceeded.Bool(succeeded))
	}
	span.End()
}

// traceContextOf returns the trace context a submission under ctx's span
// stores in its record: none unless s traces and the span is sampled.
func (s *Submitter) traceContextOf(ctx context.Context) (tc ops.TraceContext) {
	if s.tracer == nil {
		return tc
	}
	return tracectx.FromSpanContext(trace.SpanContextFromContext(ctx))
}
