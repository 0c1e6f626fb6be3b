package apiclient_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/apiclient"
	"github.com/coordinator-dev/coordinator/pkg/apiserver"
	"github.com/coordinator-dev/coordinator/pkg/ops"
)

// manyRegistrations lets a test's one identity register hundreds of names
// at once.
var manyRegistrations = apiserver.Config{RegisterRate: 10_000, RegisterBurst: 10_000}

// registerMany registers prefix-0 .. prefix-(n-1) through c with ttl.
func registerMany(t *testing.T, ctx context.Context, c *apiclient.Client, prefix string, n int, ttl time.Duration) []*apiclient.Caller {
	t.Helper()
	callers := make([]*apiclient.Caller, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				callers[i], errs[i] = c.Register(ctx, fmt.Sprintf("%s-%d", prefix, i), apiclient.RegisterConfig{TTL: ttl})
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return callers
}

// liveFor waits until d has passed since start, failing the test as soon
// as one of callers ends.
func liveFor(t *testing.T, start time.Time, d time.Duration, callers ...*apiclient.Caller) {
	t.Helper()
	var ended error
	testenv.Eventually(t, d+10*time.Second, func() bool {
		for _, cl := range callers {
			if err := cl.Err(); err != nil {
				ended = fmt.Errorf("%s ended: %w", cl.Name(), err)
				return true
			}
		}
		return time.Since(start) > d
	}, "%s to pass", d)
	if ended != nil {
		t.Fatal(ended)
	}
}

// leaseTTL is the lease's remaining TTL in seconds as etcd has it; -1
// when the lease is gone.
func leaseTTL(t *testing.T, ctx context.Context, cli *clientv3.Client, cl *apiclient.Caller) int64 {
	t.Helper()
	r, err := cli.TimeToLive(ctx, clientv3.LeaseID(cl.LeaseID()))
	if err != nil {
		t.Fatal(err)
	}
	return r.TTL
}

// endsWith waits for cl to end and checks why.
func endsWith(t *testing.T, cl *apiclient.Caller, want error) {
	t.Helper()
	select {
	case <-cl.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not end", cl.Name())
	}
	if err := cl.Err(); !errors.Is(err, want) {
		t.Fatalf("%s ended with %v, want %v", cl.Name(), err, want)
	}
}

// A Client's callers, hundreds of them, are kept alive on one
// KeepAliveMany stream, past two of their TTLs; none opens a KeepAlive
// stream of its own. They are left open: the Client's Close ends the
// stream's goroutines (TestMain's goleak checks).
func TestCallersShareOneKeepAliveStream(t *testing.T) {
	n := startNodeAPI(t, manyRegistrations)
	ctx := testenv.Ctx(t, 60*time.Second)
	c := newClient(t, apiclient.Config{Addr: n.addr})
	const ttl = 2 * time.Second
	callers := registerMany(t, ctx, c, "many", 200, ttl)
	liveFor(t, time.Now(), 2*ttl+time.Second, callers...)
	for _, i := range []int{0, 57, 199} {
		if got := leaseTTL(t, ctx, n.etcd, callers[i]); got <= 0 {
			t.Errorf("%s's lease: TTL %d, want it alive", callers[i].Name(), got)
		}
	}
	if _, err := callers[100].Set(ctx, "k", []byte("v"), 0); err != nil {
		t.Errorf("a submission after two TTLs: %v", err)
	}
	if m, k := n.started(t, "KeepAliveMany"), n.started(t, "KeepAlive"); m != 1 || k != 0 {
		t.Errorf("%d KeepAliveMany and %d KeepAlive streams, want one KeepAliveMany", m, k)
	}
}

// On the shared stream, a superseded caller ends with ErrSuperseded at
// once, a closed one's lease is revoked, and the others live on past two
// TTLs on the same stream; a caller registered later joins it.
func TestOneCallerEndsOthersLiveOn(t *testing.T) {
	n := startNodeAPI(t, manyRegistrations)
	ctx := testenv.Ctx(t, 60*time.Second)
	c := newClient(t, apiclient.Config{Addr: n.addr})
	const ttl = 2 * time.Second
	callers := registerMany(t, ctx, c, "some", 20, ttl)
	t.Cleanup(func() {
		for _, cl := range callers {
			_ = cl.Close(context.Background())
		}
	})
	superseded, closed := callers[3], callers[7]
	var rest []*apiclient.Caller
	for _, cl := range callers {
		if cl != superseded && cl != closed {
			rest = append(rest, cl)
		}
	}

	other := newClient(t, apiclient.Config{Addr: n.addr})
	newer, err := other.Register(ctx, superseded.Name(), apiclient.RegisterConfig{TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = newer.Close(context.Background()) })
	endsWith(t, superseded, apiclient.ErrSuperseded)

	if err := closed.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := leaseTTL(t, ctx, n.etcd, closed); got != -1 {
		t.Errorf("a closed caller's lease: TTL %d, want it revoked", got)
	}
	again, err := c.Register(ctx, closed.Name(), apiclient.RegisterConfig{TTL: ttl, IfAbsent: true})
	if err != nil {
		t.Fatalf("the closed caller's name is not free: %v", err)
	}
	t.Cleanup(func() { _ = again.Close(context.Background()) })
	rest = append(rest, again)

	liveFor(t, time.Now(), 2*ttl+time.Second, rest...)
	for _, cl := range rest {
		if got := leaseTTL(t, ctx, n.etcd, cl); got <= 0 {
			t.Errorf("%s's lease: TTL %d, want it alive", cl.Name(), got)
		}
	}
	if !errors.Is(superseded.Err(), apiclient.ErrSuperseded) || !errors.Is(closed.Err(), apiclient.ErrClosed) {
		t.Errorf("the ended callers' errors changed: %v, %v", superseded.Err(), closed.Err())
	}
	if m, k := n.started(t, "KeepAliveMany"), n.started(t, "KeepAlive"); m != 2 || k != 0 {
		t.Errorf("%d KeepAliveMany and %d KeepAlive streams, want one KeepAliveMany per Client", m, k)
	}
}

// noKeepAliveMany is a node that predates KeepAliveMany.
type noKeepAliveMany struct{ *apiserver.Server }

func (noKeepAliveMany) KeepAliveMany(pb.Coordinator_KeepAliveManyServer) error {
	return status.Error(codes.Unimplemented, "unknown method KeepAliveMany")
}

// callCounter counts the streams a gRPC server started, by method.
type callCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

func (c *callCounter) intercept(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	c.mu.Lock()
	c.counts[info.FullMethod]++
	c.mu.Unlock()
	return handler(srv, ss)
}

func (c *callCounter) count(method string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[method]
}

// Against a node without KeepAliveMany, each caller, those registered
// before the Client learns it and those after, is kept alive by a
// KeepAlive stream of its own, past two TTLs, and the Client tries
// KeepAliveMany only once; a superseded caller ends with ErrSuperseded.
// One caller is left open: the Client's Close ends its goroutine.
func TestCallersKeepAliveOnANodeWithoutTheStream(t *testing.T) {
	_, cli := testenv.Etcd(t)
	s, err := apiserver.New(apiserver.Config{Etcd: cli, Namespace: "old", Logger: testenv.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close) // after gs.Stop
	calls := &callCounter{counts: map[string]int{}}
	gs := grpc.NewServer(grpc.StreamInterceptor(calls.intercept))
	pb.RegisterCoordinatorServer(gs, noKeepAliveMany{s})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	ctx := testenv.Ctx(t, 60*time.Second)
	c := newClient(t, apiclient.Config{Addr: lis.Addr().String()})
	const ttl = 2 * time.Second
	first := registerMany(t, ctx, c, "first", 3, ttl)
	testenv.Eventually(t, 10*time.Second, func() bool {
		return calls.count(pb.Coordinator_KeepAlive_FullMethodName) >= 3
	}, "the callers' own KeepAlive streams")
	later := registerMany(t, ctx, c, "later", 3, ttl)
	callers := append(first, later...)
	t.Cleanup(func() {
		for _, cl := range callers[1:] {
			_ = cl.Close(context.Background())
		}
	})
	liveFor(t, time.Now(), 2*ttl+time.Second, callers...)
	for _, cl := range callers {
		if got := leaseTTL(t, ctx, cli, cl); got <= 0 {
			t.Errorf("%s's lease: TTL %d, want it alive", cl.Name(), got)
		}
	}
	if _, err := later[0].Set(ctx, "k", []byte("v"), 0); err != nil {
		t.Errorf("a submission after two TTLs: %v", err)
	}
	if m := calls.count(pb.Coordinator_KeepAliveMany_FullMethodName); m != 1 {
		t.Errorf("%d KeepAliveMany calls, want one", m)
	}
	if k := calls.count(pb.Coordinator_KeepAlive_FullMethodName); k != 6 {
		t.Errorf("%d KeepAlive streams, want one per caller", k)
	}

	other := newClient(t, apiclient.Config{Addr: lis.Addr().String()})
	newer, err := other.Register(ctx, later[1].Name(), apiclient.RegisterConfig{TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = newer.Close(context.Background()) })
	endsWith(t, later[1], apiclient.ErrSuperseded)

	if err := later[2].Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := leaseTTL(t, ctx, cli, later[2]); got != -1 {
		t.Errorf("a closed caller's lease: TTL %d, want it revoked", got)
	}
}

// A Session on the shared stream re-registers when its incarnation
// expires, and the new incarnation is kept alive on the same stream.
func TestSessionRenewsOnTheSharedStream(t *testing.T) {
	n := startNodeAPI(t, apiserver.Config{})
	ctx := testenv.Ctx(t, 60*time.Second)
	c := newClient(t, apiclient.Config{Addr: n.addr})
	const ttl = 2 * time.Second
	s, err := c.NewSession(ctx, "session", apiclient.SessionConfig{Register: apiclient.RegisterConfig{TTL: ttl}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	first := s.Incarnation()
	// Revoke the lease behind the session's back (the etcd holds no other):
	// its next submission finds the incarnation expired and registers
	// again.
	leases, err := n.etcd.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(leases.Leases) != 1 {
		t.Fatalf("leases %v, want the session's", leases.Leases)
	}
	if _, err := n.etcd.Revoke(ctx, leases.Leases[0].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Submit(ctx, ops.Set("k", []byte("v"), 0)); err != nil {
		t.Fatal(err)
	}
	if s.Incarnation() == first || s.Renewals() != 1 {
		t.Fatalf("incarnation %d (was %d), %d renewals, want one renewal", s.Incarnation(), first, s.Renewals())
	}
	start := time.Now()
	testenv.Eventually(t, 2*ttl+10*time.Second, func() bool { return time.Since(start) > 2*ttl+time.Second }, "two TTLs")
	if _, err := s.Submit(ctx, ops.Set("k", []byte("w"), 0)); err != nil {
		t.Fatalf("a submission two TTLs after the renewal: %v", err)
	}
	if s.Renewals() != 1 {
		t.Fatalf("%d renewals, want the new incarnation kept alive", s.Renewals())
	}
	if m, k := n.started(t, "KeepAliveMany"), n.started(t, "KeepAlive"); m != 1 || k != 0 {
		t.Errorf("%d KeepAliveMany and %d KeepAlive streams, want one KeepAliveMany", m, k)
	}
}

// When its node stops, a Client's keep-alive stream is opened again on the
// next of its nodes, and every caller added to it again, more than one
// message's worth, within their TTL: they all live on past two TTLs. (A
// node checks a stream's adds one after the other, a millisecond or two
// each under the race detector: the TTL leaves it time for the burst of
// registrations and for the move.)
func TestCallersMoveToAnotherNode(t *testing.T) {
	_, cli := testenv.Etcd(t)
	a, b := serveNodeAPI(t, cli, manyRegistrations), serveNodeAPI(t, cli, manyRegistrations)
	ctx := testenv.Ctx(t, 90*time.Second)
	c := newClient(t, apiclient.Config{Addrs: []string{a.addr, b.addr}})
	const ttl = 3 * time.Second
	callers := registerMany(t, ctx, c, "moving", 550, ttl)
	a.stop()
	liveFor(t, time.Now(), 2*ttl+time.Second, callers...)
	for _, i := range []int{0, 274, 549} {
		if got := leaseTTL(t, ctx, cli, callers[i]); got <= 0 {
			t.Errorf("%s's lease: TTL %d, want it alive", callers[i].Name(), got)
		}
	}
	if _, err := callers[1].Set(ctx, "k", []byte("v"), 0); err != nil {
		t.Errorf("a submission through the second node: %v", err)
	}
	if ma, mb := a.started(t, "KeepAliveMany"), b.started(t, "KeepAliveMany"); ma != 1 || mb != 1 {
		t.Errorf("KeepAliveMany streams: %d on the first node, %d on the second, want one on each", ma, mb)
	}
	if ka, kb := a.started(t, "KeepAlive"), b.started(t, "KeepAlive"); ka+kb != 0 {
		t.Errorf("%d KeepAlive streams, want none", ka+kb)
	}
}
