package apiclient_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/apiclient"
	"github.com/coordinator-dev/coordinator/pkg/apiserver"
	"github.com/coordinator-dev/coordinator/pkg/ops"
)

// apiNode is a caller API on a loopback port, with its request metrics
// and its etcd client.
type apiNode struct {
	addr    string
	metrics *prometheus.Registry
	etcd    *clientv3.Client
	// stop stops the node (its streams end UNAVAILABLE) and waits for it;
	// the test's end calls it too.
	stop func()
}

// startNodeAPI serves a caller API with cfg (etcd, namespace, logger and
// metrics filled in) on an etcd of its own until the test ends.
func startNodeAPI(t *testing.T, cfg apiserver.Config) apiNode {
	t.Helper()
	_, cli := testenv.Etcd(t)
	return serveNodeAPI(t, cli, cfg)
}

// serveNodeAPI serves a caller API on cli as startNodeAPI does: nodes
// served on one etcd client share its registrations.
func serveNodeAPI(t *testing.T, cli *clientv3.Client, cfg apiserver.Config) apiNode {
	t.Helper()
	m := apiserver.NewMetrics()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collectors()...)
	cfg.Etcd, cfg.Namespace, cfg.Logger, cfg.Metrics = cli, "apiclient", testenv.Logger(), m
	s, err := apiserver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, lis) }()
	stop := sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	t.Cleanup(stop)
	return apiNode{addr: lis.Addr().String(), metrics: reg, etcd: cli, stop: stop}
}

// started counts the gRPC calls of method the node started.
func (n apiNode) started(t *testing.T, method string) int {
	t.Helper()
	mfs, err := n.metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "grpc_server_started_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "grpc_method" && l.GetValue() == method {
					return int(m.GetCounter().GetValue())
				}
			}
		}
	}
	return 0
}

// newClient is a client of addr, closed when the test ends.
func newClient(t *testing.T, cfg apiclient.Config) *apiclient.Client {
	t.Helper()
	c, err := apiclient.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// submitAll submits n sets from each of g goroutines under s and returns
// the tokens, failing the test on an error.
func submitAll(t *testing.T, ctx context.Context, submit func(context.Context, ...ops.Op) (apiclient.Token, error), g, n int) []apiclient.Token {
	t.Helper()
	var (
		mu   sync.Mutex
		toks []apiclient.Token
		errs []error
		wg   sync.WaitGroup
	)
	for w := range g {
		wg.Go(func() {
			for i := range n {
				tok, err := submit(ctx, ops.Set("k", []byte{byte(w), byte(i)}, 0))
				mu.Lock()
				toks, errs = append(toks, tok), append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	seen := map[apiclient.Token]bool{}
	for _, tok := range toks {
		if tok.IsZero() || seen[tok] {
			t.Fatalf("token %v zero or given twice", tok)
		}
		seen[tok] = true
	}
	return toks
}

// A client's submissions, from many goroutines and callers, go on one
// SubmitStream and each gets its own token; refusals match the same
// errors as a Submit call's; with UnarySubmit, each is a Submit call.
func TestSubmissionsShareOneStream(t *testing.T) {
	n := startNodeAPI(t, apiserver.Config{})
	ctx := testenv.Ctx(t, 60*time.Second)
	c := newClient(t, apiclient.Config{Addr: n.addr})
	a, err := c.Register(ctx, "a", apiclient.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.NewSession(ctx, "b", apiclient.SessionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	submitAll(t, ctx, a.Submit, 16, 20)
	submitAll(t, ctx, b.Submit, 16, 20)
	if s, u := n.started(t, "SubmitStream"), n.started(t, "Submit"); s != 1 || u != 0 {
		t.Errorf("%d SubmitStream and %d Submit calls, want one stream", s, u)
	}

	if _, err := a.Set(ctx, "bad key", []byte("x"), 0); !errors.Is(err, apiclient.ErrInvalid) {
		t.Errorf("a bad key: %v, want ErrInvalid", err)
	}
	var e *apiclient.Error
	if _, err := a.Submit(ctx); !errors.As(err, &e) || e.Status.Code() != codes.InvalidArgument {
		t.Errorf("an empty batch: %v, want an *Error of INVALID_ARGUMENT", err)
	}
	other := newClient(t, apiclient.Config{Addr: n.addr})
	a2, err := other.Register(ctx, "a", apiclient.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Set(ctx, "k", []byte("x"), 0); !errors.Is(err, apiclient.ErrSuperseded) || !errors.As(err, &e) || e.Current() != a2.Incarnation() {
		t.Errorf("a superseded incarnation: %v, want ErrSuperseded naming %d", err, a2.Incarnation())
	}
	if err := a2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := a2.Set(ctx, "k", []byte("x"), 0); !errors.Is(err, apiclient.ErrExpired) {
		t.Errorf("an unregistered incarnation: %v, want ErrExpired", err)
	}
	_ = a.Close(ctx)

	unary := newClient(t, apiclient.Config{Addr: n.addr, UnarySubmit: true})
	u, err := unary.Register(ctx, "u", apiclient.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close(context.Background())
	before := n.started(t, "Submit")
	submitAll(t, ctx, u.Submit, 4, 5)
	if got := n.started(t, "Submit") - before; got != 20 {
		t.Errorf("UnarySubmit: %d Submit calls, want 20", got)
	}
}

// A submission whose context carries a sampled span is a Submit call of
// its own, so that its trace goes on through the node.
func TestTracedSubmissionIsACallOfItsOwn(t *testing.T) {
	n := startNodeAPI(t, apiserver.Config{})
	ctx := testenv.Ctx(t, 60*time.Second)
	c := newClient(t, apiclient.Config{Addr: n.addr})
	a, err := c.Register(ctx, "a", apiclient.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(context.Background())
	sampled := trace.ContextWithSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, TraceFlags: trace.FlagsSampled,
	}))
	if _, err := a.Set(sampled, "k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Set(ctx, "k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if s, u := n.started(t, "SubmitStream"), n.started(t, "Submit"); s != 1 || u != 1 {
		t.Errorf("%d SubmitStream and %d Submit calls, want one of each", s, u)
	}
}

// When the node ends the stream OK (here at every connection's first
// message, the connections being past their maximum age at once), the
// submissions it had not read go on the next stream: every one is
// answered, none fails.
func TestSubmissionsGoOnTheNextStream(t *testing.T) {
	n := startNodeAPI(t, apiserver.Config{MaxConnectionAge: time.Nanosecond})
	ctx := testenv.Ctx(t, 60*time.Second)
	c := newClient(t, apiclient.Config{Addr: n.addr})
	a, err := c.Register(ctx, "a", apiclient.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(context.Background())
	submitAll(t, ctx, a.Submit, 8, 10)
	if s := n.started(t, "SubmitStream"); s < 2 {
		t.Errorf("%d streams, want one per message", s)
	}
}

// noStream is a node that predates SubmitStream.
type noStream struct{ *apiserver.Server }

func (noStream) SubmitStream(pb.Coordinator_SubmitStreamServer) error {
	return status.Error(codes.Unimplemented, "unknown method SubmitStream")
}

// Against a node without SubmitStream, submissions are Submit calls.
func TestSubmissionsAreCallsOnANodeWithoutTheStream(t *testing.T) {
	_, cli := testenv.Etcd(t)
	s, err := apiserver.New(apiserver.Config{Etcd: cli, Namespace: "old", Logger: testenv.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close) // after gs.Stop
	gs := grpc.NewServer()
	pb.RegisterCoordinatorServer(gs, noStream{s})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	ctx := testenv.Ctx(t, 60*time.Second)
	c := newClient(t, apiclient.Config{Addr: lis.Addr().String()})
	a, err := c.Register(ctx, "a", apiclient.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(context.Background())
	toks := submitAll(t, ctx, a.Submit, 8, 5)
	if len(toks) != 40 {
		t.Fatalf("%d tokens", len(toks))
	}
}

// A submission whose context has ended is not sent; one whose caller
// stops waiting returns the context's error, as a call would.
func TestSubmissionEndsWithItsContext(t *testing.T) {
	n := startNodeAPI(t, apiserver.Config{})
	ctx := testenv.Ctx(t, 60*time.Second)
	c := newClient(t, apiclient.Config{Addr: n.addr})
	a, err := c.Register(ctx, "a", apiclient.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(context.Background())
	done, cancel := context.WithCancel(ctx)
	cancel()
	var e *apiclient.Error
	if _, err := a.Set(done, "k", []byte("v"), 0); !errors.As(err, &e) || e.Status.Code() != codes.Canceled {
		t.Errorf("an ended context: %v, want CANCELED", err)
	}
	if _, err := a.Set(ctx, "k", []byte("v"), 0); err != nil {
		t.Errorf("the next submission: %v", err)
	}
}
