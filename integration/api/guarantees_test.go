package api

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/apierr"
	"github.com/coordinator-dev/coordinator/pkg/apiserver"
)

// G1: a superseded and an expired incarnation are refused with distinct
// statuses, through gRPC and through HTTP, and nothing of theirs lands.
func TestSupersededAndExpiredAreRefusedDistinctly(t *testing.T) {
	c := startCluster(t)
	n := startAPI(t, c.etcd, apiserver.Config{})
	api := grpcClient(t, n.Addr, nil)
	ctx := testenv.Ctx(t, 60*time.Second)

	old := register(t, ctx, api, "agent", nil)
	cur := register(t, ctx, api, "agent", nil)
	_, err := api.Submit(ctx, &pb.SubmitRequest{Name: "agent", Incarnation: old.Incarnation, Ops: []*pb.Op{setOp("g1-sup", "x")}})
	wantRefused(t, "superseded submit", err, codes.Aborted, apierr.ReasonSuperseded)
	res := post(t, ctx, n.Addr, "/v1/submit", map[string]any{
		"name": "agent", "incarnation": old.Incarnation, "ops": []any{map[string]any{"set": map[string]any{"key": "g1-sup", "text": "x"}}},
	})
	if res.Code != http.StatusConflict || res.Reason() != apierr.ReasonSuperseded {
		t.Fatalf("superseded over HTTP: %d %s", res.Code, res.Raw)
	}

	gone := register(t, ctx, api, "gone", nil)
	if _, err := api.Unregister(ctx, &pb.UnregisterRequest{Name: "gone", Incarnation: gone.Incarnation, LeaseId: gone.LeaseId}); err != nil {
		t.Fatal(err)
	}
	_, err = api.Submit(ctx, &pb.SubmitRequest{Name: "gone", Incarnation: gone.Incarnation, Ops: []*pb.Op{setOp("g1-exp", "x")}})
	wantRefused(t, "expired submit", err, codes.NotFound, apierr.ReasonExpired)
	res = post(t, ctx, n.Addr, "/v1/submit", map[string]any{
		"name": "gone", "incarnation": strconv.FormatInt(gone.Incarnation, 10), "ops": []any{map[string]any{"set": map[string]any{"key": "g1-exp", "text": "x"}}},
	})
	if res.Code != http.StatusNotFound || res.Reason() != apierr.ReasonExpired {
		t.Fatalf("expired over HTTP: %d %s", res.Code, res.Raw)
	}
	_, err = api.KeepAliveOnce(ctx, &pb.KeepAliveRequest{Name: "agent", Incarnation: old.Incarnation, LeaseId: old.LeaseId})
	wantRefused(t, "keepalive of superseded", err, codes.Aborted, apierr.ReasonSuperseded)
	_, err = api.KeepAliveOnce(ctx, &pb.KeepAliveRequest{Name: "gone", Incarnation: gone.Incarnation, LeaseId: gone.LeaseId})
	wantRefused(t, "keepalive of expired", err, codes.NotFound, apierr.ReasonExpired)

	// The current incarnation is accepted; the refused ones left nothing.
	tok, err := api.Submit(ctx, &pb.SubmitRequest{Name: "agent", Incarnation: cur.Incarnation, Ops: []*pb.Op{setOp("g1-cur", "ok")}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.WaitApplied(ctx, &pb.WaitAppliedRequest{Token: tok.Token}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"g1-sup", "g1-exp"} {
		if v := readKey(t, c.mc.Addr, k); v != "" {
			t.Errorf("refused key %s landed: %q", k, v)
		}
	}
	if v := readKey(t, c.mc.Addr, "g1-cur"); v != "ok" {
		t.Errorf("g1-cur = %q, want ok", v)
	}
	// Register with if_absent on a held name is NAME_HELD (409).
	_, err = api.Register(ctx, &pb.RegisterRequest{Name: "agent", IfAbsent: true})
	wantRefused(t, "if_absent on a held name", err, codes.AlreadyExists, apierr.ReasonNameHeld)
}

// G4, G2: the operations a dead incarnation had accepted are applied, and
// before its successor's.
func TestOldIncarnationsOperationsGoFirst(t *testing.T) {
	c := startCluster(t)
	n := startAPI(t, c.etcd, apiserver.Config{})
	api := grpcClient(t, n.Addr, nil)
	ctx := testenv.Ctx(t, 60*time.Second)

	c.mc.Stop() // keep everything pending
	old := register(t, ctx, api, "agent", nil)
	var last string
	for i := range 20 {
		r, err := api.Submit(ctx, &pb.SubmitRequest{Name: "agent", Incarnation: old.Incarnation, Ops: []*pb.Op{
			setOp("g4-key", fmt.Sprintf("old-%d", i)), setOp(fmt.Sprintf("g4-old-%d", i), "1"),
		}})
		if err != nil {
			t.Fatal(err)
		}
		last = r.Token
	}
	// The old incarnation dies with all of it pending.
	if _, err := api.Unregister(ctx, &pb.UnregisterRequest{Name: "agent", Incarnation: old.Incarnation, LeaseId: old.LeaseId}); err != nil {
		t.Fatal(err)
	}
	cur := register(t, ctx, api, "agent", nil)
	r, err := api.Submit(ctx, &pb.SubmitRequest{Name: "agent", Incarnation: cur.Incarnation, Ops: []*pb.Op{setOp("g4-key", "new")}})
	if err != nil {
		t.Fatal(err)
	}
	c.mc.Start()
	if _, err := api.WaitApplied(ctx, &pb.WaitAppliedRequest{Token: r.Token}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.WaitApplied(ctx, &pb.WaitAppliedRequest{Token: last}); err != nil {
		t.Fatal(err)
	}
	if v := readKey(t, c.mc.Addr, "g4-key"); v != "new" {
		t.Fatalf("g4-key = %q, want the new incarnation's value", v)
	}
	for i := range 20 {
		if v := readKey(t, c.mc.Addr, fmt.Sprintf("g4-old-%d", i)); v != "1" {
			t.Fatalf("old incarnation's g4-old-%d = %q, want 1", i, v)
		}
	}
}

// G8: WaitApplied returns once the value is in memcached, and times out
// with TIMEOUT while memcached is away.
func TestWaitApplied(t *testing.T) {
	c := startCluster(t)
	n := startAPI(t, c.etcd, apiserver.Config{})
	api := grpcClient(t, n.Addr, nil)
	ctx := testenv.Ctx(t, 60*time.Second)
	reg := register(t, ctx, api, "agent", nil)

	for i := range 5 {
		v := fmt.Sprintf("v%d", i)
		r, err := api.Submit(ctx, &pb.SubmitRequest{Name: "agent", Incarnation: reg.Incarnation, Ops: []*pb.Op{setOp("g8", v)}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := api.WaitApplied(ctx, &pb.WaitAppliedRequest{Token: r.Token}); err != nil {
			t.Fatal(err)
		}
		if got := readKey(t, c.mc.Addr, "g8"); got != v {
			t.Fatalf("after WaitApplied(%s): g8 = %q, want %q", r.Token, got, v)
		}
	}
	c.mc.Stop()
	r, err := api.Submit(ctx, &pb.SubmitRequest{Name: "agent", Incarnation: reg.Incarnation, Ops: []*pb.Op{setOp("g8", "later")}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = api.WaitApplied(ctx, &pb.WaitAppliedRequest{Token: r.Token, TimeoutMs: 300})
	wantRefused(t, "wait while memcached is away", err, codes.DeadlineExceeded, apierr.ReasonTimeout)
	res := post(t, ctx, n.Addr, "/v1/wait-applied", map[string]any{"token": r.Token, "timeout_ms": 200})
	if res.Code != http.StatusGatewayTimeout || res.Reason() != apierr.ReasonTimeout {
		t.Fatalf("wait over HTTP: %d %s", res.Code, res.Raw)
	}
	c.mc.Start()
	res = post(t, ctx, n.Addr, "/v1/wait-applied", map[string]any{"token": r.Token})
	if res.Code != http.StatusOK {
		t.Fatalf("wait over HTTP: %d %s", res.Code, res.Raw)
	}
	if got := readKey(t, c.mc.Addr, "g8"); got != "later" {
		t.Fatalf("g8 = %q, want later", got)
	}
}

// G7: Register with wait_drained returns only once the earlier
// incarnations' operations are applied, and Registrations shows the
// draining incarnation meanwhile.
func TestDrainBarrier(t *testing.T) {
	c := startCluster(t)
	n := startAPI(t, c.etcd, apiserver.Config{})
	api := grpcClient(t, n.Addr, nil)
	ctx := testenv.Ctx(t, 60*time.Second)

	c.mc.Stop()
	old := register(t, ctx, api, "agent", nil)
	for i := range 3 {
		if _, err := api.Submit(ctx, &pb.SubmitRequest{Name: "agent", Incarnation: old.Incarnation, Ops: []*pb.Op{setOp(fmt.Sprintf("g7-%d", i), "old")}}); err != nil {
			t.Fatal(err)
		}
	}
	type result struct {
		r   *pb.RegisterResponse
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := api.Register(ctx, &pb.RegisterRequest{Name: "agent", WaitDrained: true, TtlSeconds: 2})
		done <- result{r, err}
	}()
	var views *pb.RegistrationsResponse
	testenv.Eventually(t, 20*time.Second, func() bool {
		var err error
		views, err = api.Registrations(ctx, &pb.RegistrationsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range views.Registrations {
			if v.Incarnation == old.Incarnation && v.Status == "draining" && v.Pending == 3 {
				return true
			}
		}
		return false
	}, "old incarnation listed as draining with 3 pending")
	// The new incarnation is registered (the old one is draining) but the
	// call waits: memcached is away.
	select {
	case r := <-done:
		t.Fatalf("Register with wait_drained returned while the old incarnation was pending: %v %v", r.r, r.err)
	default:
	}
	c.mc.Start()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		t.Fatal("Register with wait_drained did not return after memcached came back")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	for i := range 3 {
		if v := readKey(t, c.mc.Addr, fmt.Sprintf("g7-%d", i)); v != "old" {
			t.Fatalf("after the barrier g7-%d = %q, want old", i, v)
		}
	}
	// The node kept the lease alive while it waited (TTL 2s): it is alive.
	if _, err := api.KeepAliveOnce(ctx, &pb.KeepAliveRequest{Name: "agent", Incarnation: r.r.Incarnation, LeaseId: r.r.LeaseId}); err != nil {
		t.Fatalf("keepalive after the barrier: %v", err)
	}
}

// Group commit across callers: callers on separate connections to one
// node share etcd transactions (tokens REV.IDX with one REV).
func TestCallersOfOneNodeShareTransactions(t *testing.T) {
	c := startCluster(t)
	n := startAPI(t, c.etcd, apiserver.Config{})
	ctx := testenv.Ctx(t, 60*time.Second)
	const callers, each = 16, 20
	var (
		mu   sync.Mutex
		revs = map[string]int{}
		wg   sync.WaitGroup
		errs = make(chan error, callers)
	)
	for i := range callers {
		api := grpcClient(t, n.Addr, nil) // a connection of its own, as a process has
		name := fmt.Sprintf("caller-%d", i)
		reg := register(t, ctx, api, name, nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				r, err := api.Submit(ctx, &pb.SubmitRequest{Name: name, Incarnation: reg.Incarnation, Ops: []*pb.Op{setOp(fmt.Sprintf("%s-%d", name, j), "v")}})
				if err != nil {
					errs <- err
					return
				}
				rev, _, _ := cutDot(r.Token)
				mu.Lock()
				revs[rev]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(revs) >= callers*each {
		t.Fatalf("%d submissions took %d transactions: no two callers shared one", callers*each, len(revs))
	}
	t.Logf("%d submissions of %d callers in %d transactions", callers*each, callers, len(revs))
}

func cutDot(tok string) (string, string, bool) {
	for i := range tok {
		if tok[i] == '.' {
			return tok[:i], tok[i+1:], true
		}
	}
	return tok, "", false
}

// The KeepAlive stream keeps a short lease alive; a stream that ends (the
// caller went away, or its connection broke) leaves the lease to run out
// by its TTL: only Unregister revokes it.
func TestKeepAliveStreamKeepsAliveAndEndsByTTL(t *testing.T) {
	c := startCluster(t)
	n := startAPI(t, c.etcd, apiserver.Config{})
	api := grpcClient(t, n.Addr, nil)
	ctx := testenv.Ctx(t, 60*time.Second)

	reg := register(t, ctx, api, "short", &pb.RegisterRequest{TtlSeconds: 2})
	sctx, cancel := context.WithCancel(ctx)
	stream, err := api.KeepAlive(sctx, &pb.KeepAliveRequest{Name: "short", Incarnation: reg.Incarnation, LeaseId: reg.LeaseId})
	if err != nil {
		t.Fatal(err)
	}
	// Renewals past two TTLs: the lease lives only through the stream.
	renewals := 0
	for start := time.Now(); time.Since(start) < 5*time.Second; {
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("keepalive stream: %v", err)
		}
		renewals++
	}
	if _, err := api.Submit(ctx, &pb.SubmitRequest{Name: "short", Incarnation: reg.Incarnation, Ops: []*pb.Op{setOp("ka", "1")}}); err != nil {
		t.Fatalf("submit after %d renewals: %v", renewals, err)
	}

	long := register(t, ctx, api, "long", &pb.RegisterRequest{TtlSeconds: 4})
	lctx, lcancel := context.WithCancel(ctx)
	ls, err := api.KeepAlive(lctx, &pb.KeepAliveRequest{Name: "long", Incarnation: long.Incarnation, LeaseId: long.LeaseId})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ls.Recv(); err != nil {
		t.Fatal(err)
	}
	lcancel()
	// The lease outlives the stream: its TTL left is read from etcd, not
	// timed here, so a loaded machine cannot make this pass or fail.
	ttl, err := c.etcd.TimeToLive(ctx, clientv3.LeaseID(long.LeaseId))
	if err != nil {
		t.Fatal(err)
	}
	if ttl.TTL <= 0 {
		t.Fatalf("the lease of an ended stream was revoked (TTL left %d)", ttl.TTL)
	}
	// Polled without renewing: KeepAliveOnce would keep it alive.
	testenv.Eventually(t, 20*time.Second, func() bool {
		ttl, err := c.etcd.TimeToLive(ctx, clientv3.LeaseID(long.LeaseId))
		return err == nil && ttl.TTL == -1
	}, "the lease of an ended stream runs out by its TTL")
	_, err = api.Submit(ctx, &pb.SubmitRequest{Name: "long", Incarnation: long.Incarnation, Ops: []*pb.Op{setOp("ka", "2")}})
	wantRefused(t, "submit once the lease ran out", err, codes.NotFound, apierr.ReasonExpired)

	// A superseded incarnation's stream ends with SUPERSEDED.
	register(t, ctx, api, "short", nil)
	for {
		if _, err = stream.Recv(); err != nil {
			break
		}
	}
	wantRefused(t, "stream of a superseded incarnation", err, codes.Aborted, apierr.ReasonSuperseded)
	cancel()
}
