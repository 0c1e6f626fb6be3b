package tracectx_test

import (
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/coordinator-dev/coordinator/internal/tracectx"
	"github.com/coordinator-dev/coordinator/pkg/ops"
)

func spanContext(flags trace.TraceFlags, state string) trace.SpanContext {
	ts, err := trace.ParseTraceState(state)
	if err != nil {
		panic(err)
	}
	return trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80, 0x31, 0x9c},
		SpanID:     trace.SpanID{0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31},
		TraceFlags: flags, TraceState: ts,
	})
}

// A sampled span context goes into a record as its W3C headers and comes
// back as the same, remote, span context.
func TestRoundTrip(t *testing.T) {
	sc := spanContext(trace.FlagsSampled, "congo=t61rcWkgMzE")
	tc := tracectx.FromSpanContext(sc)
	want := ops.TraceContext{Parent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", State: "congo=t61rcWkgMzE"}
	if tc != want {
		t.Fatalf("FromSpanContext = %+v, want %+v", tc, want)
	}
	got := tracectx.SpanContext(tc)
	if !got.IsRemote() || !got.Equal(sc.WithRemote(true)) {
		t.Fatalf("SpanContext = %+v, want %+v", got, sc)
	}
}

// Nothing is carried for an unsampled or invalid span context; a state
// over MaxStateBytes is left out; a malformed parent gives no span context.
func TestWhatIsLeftOut(t *testing.T) {
	if tc := tracectx.FromSpanContext(spanContext(0, "")); !tc.IsZero() {
		t.Errorf("unsampled: %+v, want nothing", tc)
	}
	if tc := tracectx.FromSpanContext(trace.SpanContext{}); !tc.IsZero() {
		t.Errorf("invalid: %+v, want nothing", tc)
	}
	long := "a=" + strings.Repeat("x", 255) + ",b=" + strings.Repeat("y", 255)
	if tc := tracectx.FromSpanContext(spanContext(trace.FlagsSampled, long)); tc.Parent == "" || tc.State != "" {
		t.Errorf("long state: %+v, want the parent alone", tc)
	}
	for _, tc := range []ops.TraceContext{{}, {Parent: "garbage"}, {State: "a=b"}} {
		if sc := tracectx.SpanContext(tc); sc.IsValid() {
			t.Errorf("SpanContext(%+v) = %+v, want invalid", tc, sc)
		}
	}
}
