// Package tracectx carries a span context in a batch record
// (ops.TraceContext), so that the leader's apply of a batch joins the trace
// of the submission that stored it.
//
// The record holds W3C Trace Context, whatever propagator the process uses
// for its calls: a record outlives the process that wrote it and is read by
// another, so its format cannot depend on either's settings (a process's
// global propagator is a no-op unless it sets one, and may be B3 or carry
// baggage, which has no place in etcd). Only a sampled span context is
// carried: an unsampled one would make the leader's spans unsampled too,
// and records without one keep the format that earlier versions read (see
// ops.RecordVersion).
package tracectx

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/coordinator-dev/coordinator/pkg/ops"
)

// MaxStateBytes bounds the tracestate a record carries: the 512 characters
// W3C Trace Context asks every vendor to pass on. A longer one is left out
// (the trace stays linked), so that a caller's headers cannot grow the
// records in etcd by much.
const MaxStateBytes = 512

// w3c is the W3C Trace Context propagator, the record's format.
var w3c propagation.TraceContext

// FromSpanContext returns sc as a record carries it; the zero TraceContext
// when sc is not valid and sampled.
func FromSpanContext(sc trace.SpanContext) ops.TraceContext {
	if !sc.IsValid() || !sc.IsSampled() {
		return ops.TraceContext{}
	}
	var c carrier
	w3c.Inject(trace.ContextWithSpanContext(context.Background(), sc), &c)
	if len(c.State) > MaxStateBytes {
		c.State = ""
	}
	return ops.TraceContext(c)
}

// SpanContext returns the remote span context tc carries; it is not valid
// when tc is zero or malformed.
func SpanContext(tc ops.TraceContext) trace.SpanContext {
	if tc.Parent == "" {
		return trace.SpanContext{}
	}
	c := carrier(tc)
	return trace.SpanContextFromContext(w3c.Extract(context.Background(), &c))
}

// carrier is a propagation.TextMapCarrier of the two W3C headers.
type carrier ops.TraceContext

const (
	headerParent = "traceparent"
	headerState  = "tracestate"
)

// Get returns the value of header key.
func (c *carrier) Get(key string) string {
	switch key {
	case headerParent:
		return c.Parent
	case headerState:
		return c.State
	}
	return ""
}

// Set sets header key; other headers than the two are dropped.
func (c *carrier) Set(key, value string) {
	switch key {
	case headerParent:
		c.Parent = value
	case headerState:
		c.State = value
	}
}

// Keys lists the headers the carrier holds.
func (c *carrier) Keys() []string { return []string{headerParent, headerState} }
