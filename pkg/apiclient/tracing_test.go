package apiclient_test

import (
	"context"
	"maps"
	"net"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/apiclient"
	"github.com/coordinator-dev/coordinator/pkg/apiserver"
	"github.com/coordinator-dev/coordinator/pkg/applier"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/node"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
	"github.com/coordinator-dev/coordinator/pkg/tracing"
)

// One submission followed from the caller to memcached, as OpenTelemetry's
// in-memory exporter sees the spans of the caller's process and of the
// node's: the caller's span, pkg/apiclient's client span, the API's server
// span, the submission's, its group transaction's and the leader's apply
// of its batch are one trace, each the child of the one before (the apply
// is the submission's child), with the token, the keys and the memcached
// server on them.
func TestOneSubmissionIsOneTraceFromCallerToMemcached(t *testing.T) {
	_, cli := testenv.Etcd(t)
	mc := testenv.StartMemcached(t)
	exp := tracetest.NewInMemoryExporter()
	provider := func(service string) *sdktrace.TracerProvider {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp),
			sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", service))))
		t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		return tp
	}
	callerTP, nodeTP := provider("caller"), provider("coordinator")

	const ns = "traced"
	testenv.StartNode(t, node.Config{Etcd: cli, Layout: keyspace.MustNew(ns), NodeID: "n1", Memcached: []string{mc.Addr},
		TracerProvider: nodeTP})
	srv, err := apiserver.New(apiserver.Config{Etcd: cli, Namespace: ns, TracerProvider: nodeTP, Logger: testenv.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, srv)

	c, err := apiclient.New(apiclient.Config{Addr: addr, TracerProvider: callerTP, Propagator: tracing.Propagator()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx := testenv.Ctx(t, 60*time.Second)
	caller, err := c.Register(ctx, "traced-caller", apiclient.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caller.Close(context.Background()) })

	sctx, root := callerTP.Tracer("caller").Start(ctx, "update config")
	tok, err := caller.Set(sctx, "traced-key", []byte("traced-value"), 0)
	root.End()
	if err != nil {
		t.Fatal(err)
	}
	if err := caller.WaitApplied(ctx, tok); err != nil {
		t.Fatal(err)
	}
	it, err := memcache.New(mc.Addr).Get("traced-key")
	if err != nil || string(it.Value) != "traced-value" {
		t.Fatalf("memcached holds %v, %v", it, err)
	}

	// The apply span ends once the leader has read its commit's reply,
	// which may come after WaitApplied saw the commit.
	tid := root.SpanContext().TraceID()
	byName := map[string]tracetest.SpanStub{}
	testenv.Eventually(t, 10*time.Second, func() bool {
		for _, s := range exp.GetSpans() {
			if s.SpanContext.TraceID() == tid {
				byName[s.Name+"/"+s.SpanKind.String()] = s
			}
		}
		_, ok := byName[applier.SpanApply+"/consumer"]
		return ok
	}, "the apply span in the caller's trace")

	const method = "coordinator.v1.Coordinator/Submit"
	chain := []string{"update config/internal", method + "/client", method + "/server",
		tokenseq.SpanSubmit + "/producer", tokenseq.SpanGroupTxn + "/client"}
	for i, name := range chain {
		s, ok := byName[name]
		if !ok {
			t.Fatalf("no span %s in the caller's trace; have %v", name, slices.Sorted(maps.Keys(byName)))
		}
		if i > 0 && s.Parent.SpanID() != byName[chain[i-1]].SpanContext.SpanID() {
			t.Errorf("span %s's parent is not %s", name, chain[i-1])
		}
	}
	submit, group, apply := byName[chain[3]], byName[chain[4]], byName[applier.SpanApply+"/consumer"]
	if apply.Parent.SpanID() != submit.SpanContext.SpanID() {
		t.Errorf("apply span's parent is not the submission's span")
	}
	if len(group.Links) != 1 || !group.Links[0].SpanContext.Equal(submit.SpanContext) {
		t.Errorf("group transaction span's links %v, want the submission's span", group.Links)
	}
	if svc := byName[method+"/server"].Resource.Set(); !hasAttr(svc.ToSlice(), "service.name", "coordinator") {
		t.Errorf("server span's resource %v, want the node's", svc.ToSlice())
	}
	for _, c := range []struct {
		span tracetest.SpanStub
		want map[attribute.Key]any
	}{
		{submit, map[attribute.Key]any{tokenseq.AttrName: "traced-caller", tokenseq.AttrBatchOps: int64(1),
			tokenseq.AttrTokenRevision: tok.Revision, tokenseq.AttrTokenIndex: int64(tok.Index)}},
		{group, map[attribute.Key]any{tokenseq.AttrTokenRevision: tok.Revision, tokenseq.AttrGroupBatches: int64(1)}},
		{apply, map[attribute.Key]any{tokenseq.AttrTokenRevision: tok.Revision, tokenseq.AttrBatchOps: int64(1),
			applier.AttrWrites: int64(1)}},
	} {
		for k, v := range c.want {
			if !hasAttr(c.span.Attributes, k, v) {
				t.Errorf("span %s: %s is not %v in %v", c.span.Name, k, v, c.span.Attributes)
			}
		}
	}
	if !hasAttr(apply.Attributes, applier.AttrMemcachedServers, []string{mc.Addr}) {
		t.Errorf("apply span's servers are not [%s]: %v", mc.Addr, apply.Attributes)
	}
	// The keep-alive streams live as long as the connection or the
	// incarnation, in no caller's context: they make no client span.
	for _, s := range exp.GetSpans() {
		if (s.Name == "coordinator.v1.Coordinator/KeepAlive" || s.Name == "coordinator.v1.Coordinator/KeepAliveMany") &&
			s.SpanKind == trace.SpanKindClient {
			t.Errorf("a client span for the keep-alive stream %s", s.Name)
		}
	}
}

// serve serves s on a free loopback port until the test ends.
func serve(t *testing.T, s *apiserver.Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return lis.Addr().String()
}

// hasAttr reports whether kvs hold key with value want.
func hasAttr(kvs []attribute.KeyValue, key attribute.Key, want any) bool {
	for _, kv := range kvs {
		if kv.Key != key {
			continue
		}
		return reflect.DeepEqual(kv.Value.AsInterface(), want)
	}
	return false
}
