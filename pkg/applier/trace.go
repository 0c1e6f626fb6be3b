package applier

import (
	"context"
	"slices"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/coordinator-dev/coordinator/internal/tracectx"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// Tracing (Config.TracerProvider).
//
// A batch whose record carries a trace context (a sampled submission's; see
// tokenseq.SubmitterConfig.TracerProvider) gets a consumer span, SpanApply,
// a child of the submission's span: the submission's trace goes on to the
// leader's writes. It starts when its round's writes start, and ends when
// the commit that removes the batch is done (or the round fails). Rounds
// have no span of their own: a round mixes batches of many traces, and a
// span per batch costs nothing for batches that are not traced.
//
// Without a TracerProvider, or for a batch without a trace context, the
// write path only tests a nil tracer and a zero trace context: no span, no
// allocation.

// SpanApply is the span of the leader's apply of one batch: its writes to
// memcached and the commit that records it as applied.
const SpanApply = "coordinator.apply"

// Events on a SpanApply span.
const (
	// EventWritten marks the end of the round's writes: every write of
	// the batch is in memcached (or was refused, see EventRejected).
	EventWritten = "written"
	// EventRejected is an operation memcached refused for good; the
	// batch is set aside (see QuarantineRecord).
	EventRejected = "rejected"
)

// Attribute keys of SpanApply, besides tokenseq's (name, incarnation,
// batch id, operations, token).
const (
	// AttrTerm is the leader's term, the fence its writes carry.
	AttrTerm = attribute.Key("coordinator.term")
	// AttrWrites is the number of the batch's operations written: the
	// newest of their keys in the round.
	AttrWrites = attribute.Key("coordinator.apply.writes")
	// AttrSkipped is the number of the batch's operations not written
	// because a newer operation in the round writes the same key.
	AttrSkipped = attribute.Key("coordinator.apply.skipped")
	// AttrMemcachedServers are the memcached servers (host:port) the
	// batch's writes go to.
	AttrMemcachedServers = attribute.Key("coordinator.memcached.servers")
	// AttrCommitRevision is the revision of the transaction that recorded
	// the batch as applied (the watermark) and removed it.
	AttrCommitRevision = attribute.Key("coordinator.commit.revision")
	// AttrReason is why an operation was rejected.
	AttrReason = attribute.Key("coordinator.reason")
)

// tracerName is the instrumentation scope of the spans.
const tracerName = "github.com/coordinator-dev/coordinator/pkg/applier"

// startApplies starts the span of every traced batch of a round's items,
// before their writes; newest is the round's newest operation per key.
func (a *applier) startApplies(ctx context.Context, items []pending, newest map[string]opPos) {
	if a.tracer == nil {
		return
	}
	for n := range items {
		it := &items[n]
		if it.batch == nil || it.batch.Trace.IsZero() {
			continue
		}
		sc := tracectx.SpanContext(it.batch.Trace)
		if !sc.IsValid() {
			continue // a malformed trace context: the batch goes untraced
		}
		var servers []string
		writes := 0
		for i, o := range it.batch.Ops {
			if newest[o.Key] != (opPos{tok: it.tok, idx: i}) {
				continue
			}
			writes++
			if s, err := a.cfg.Memcached.PickServer(o.Key); err == nil && !slices.Contains(servers, s) {
				servers = append(servers, s)
			}
		}
		b := it.batch
		_, it.span = a.tracer.Start(trace.ContextWithRemoteSpanContext(ctx, sc), SpanApply,
			trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
				tokenseq.AttrName.String(b.Name), tokenseq.AttrIncarnation.Int64(b.Incarnation),
				tokenseq.AttrBatchID.String(b.ID), tokenseq.AttrBatchOps.Int(len(b.Ops)),
				tokenseq.AttrTokenRevision.Int64(it.tok.Revision), tokenseq.AttrTokenIndex.Int64(int64(it.tok.Index)),
				AttrTerm.Int64(int64(a.term)), AttrWrites.Int(writes), AttrSkipped.Int(len(b.Ops)-writes),
				AttrMemcachedServers.StringSlice(servers)))
	}
}

// writtenApplies marks the end of a round's writes on its items' spans;
// rejected holds the reasons of the operations memcached refused, by item.
func (a *applier) writtenApplies(items []pending, rejected map[int][]string) {
	if a.tracer == nil {
		return
	}
	for n := range items {
		span := items[n].span
		if span == nil {
			continue
		}
		for _, why := range rejected[n] {
			span.AddEvent(EventRejected, trace.WithAttributes(AttrReason.String(why)))
		}
		if len(rejected[n]) > 0 {
			span.SetStatus(codes.Error, "set aside: memcached refused an operation")
		}
		span.AddEvent(EventWritten)
	}
}

// endApplies ends the spans of items: committed at revision rev, or failed
// with err (the next leader, or this one's next round, applies them again).
func (a *applier) endApplies(items []pending, rev int64, err error) {
	if a.tracer == nil {
		return
	}
	for n := range items {
		span := items[n].span
		if span == nil {
			continue
		}
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		} else {
			span.SetAttributes(AttrCommitRevision.Int64(rev))
		}
		span.End()
		items[n].span = nil
	}
}
