package apiserver

import (
	"context"
	"net/http"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/tracing"
)

// With a TracerProvider, a gRPC call and an HTTP/JSON request each make a
// server span that continues the caller's trace (W3C trace context), as
// the SDK's in-memory recorder sees them.
func TestServeTracesCalls(t *testing.T) {
	_, cli := testenv.Etcd(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	srv, err := New(Config{Etcd: cli, Namespace: "traced", TracerProvider: tp, Logger: testenv.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveLoopback(t, srv)

	// The caller's own provider, recording nothing, makes its span context.
	callerTP := sdktrace.NewTracerProvider()
	t.Cleanup(func() { _ = callerTP.Shutdown(context.Background()) })
	cctx, span := callerTP.Tracer("caller").Start(testenv.Ctx(t, 30*time.Second), "caller")
	defer span.End()
	want := span.SpanContext()

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(callerTP),
			otelgrpc.WithPropagators(tracing.Propagator()))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := pb.NewCoordinatorClient(conn).Status(cctx, &pb.StatusRequest{}); err != nil {
		t.Fatal(err)
	}

	req, err := http.NewRequestWithContext(cctx, http.MethodGet, "http://"+addr+"/v1/status", nil)
	if err != nil {
		t.Fatal(err)
	}
	tracing.Propagator().Inject(cctx, propagationHeader(req.Header))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	found := map[string]bool{}
	testenv.Eventually(t, 10*time.Second, func() bool {
		for _, s := range rec.Ended() {
			if s.SpanKind() == trace.SpanKindServer && s.SpanContext().TraceID() == want.TraceID() {
				found[s.Name()] = true
			}
		}
		return found["coordinator.v1.Coordinator/Status"] && found["GET /v1/status"]
	}, "server spans in the caller's trace: %v", found)
}

// propagationHeader carries trace context in HTTP headers.
func propagationHeader(h http.Header) propagation.HeaderCarrier { return propagation.HeaderCarrier(h) }
