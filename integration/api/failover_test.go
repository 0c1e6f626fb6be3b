package api

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/coordinator-dev/coordinator/api/coordinator/v1"
	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/apierr"
	"github.com/coordinator-dev/coordinator/pkg/apiserver"
	"github.com/coordinator-dev/coordinator/pkg/tokenseq"
)

// failoverCaller is a caller of one incarnation that keeps its lease alive
// and submits through the first of its API nodes that answers, moving to
// the next when one goes away. A submission whose reply is lost is resent
// with the same batch id: with the lease id given, a receipt makes the
// resend return the first acceptance's token.
type failoverCaller struct {
	name  string
	reg   *pb.RegisterResponse
	nodes []pb.CoordinatorClient

	mu  sync.Mutex
	cur int
}

func (c *failoverCaller) node() (int, pb.CoordinatorClient) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur, c.nodes[c.cur]
}

// next moves on from node i (once, however many calls saw it fail).
func (c *failoverCaller) next(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == i && c.cur+1 < len(c.nodes) {
		c.cur++
	}
}

// transient reports whether err is the node going away, not an answer.
func transient(err error) bool {
	if apierr.ReasonOf(err) == apierr.ReasonUnavailable {
		return true
	}
	return apierr.ReasonOf(err) == "" && (status.Code(err) == codes.Unavailable || status.Code(err) == codes.Canceled)
}

// keepAlive keeps the lease alive through the current node until ctx ends.
func (c *failoverCaller) keepAlive(ctx context.Context) error {
	for ctx.Err() == nil {
		i, api := c.node()
		stream, err := api.KeepAlive(ctx, &pb.KeepAliveRequest{Name: c.name, Incarnation: c.reg.Incarnation, LeaseId: c.reg.LeaseId})
		for err == nil {
			_, err = stream.Recv()
		}
		if ctx.Err() != nil {
			return nil
		}
		if !transient(err) {
			return err
		}
		c.next(i)
	}
	return nil
}

func (c *failoverCaller) submit(ctx context.Context, key, value string) (string, error) {
	req := &pb.SubmitRequest{
		Name: c.name, Incarnation: c.reg.Incarnation, LeaseId: c.reg.LeaseId,
		BatchId: tokenseq.NewBatchID(), Ops: []*pb.Op{setOp(key, value)},
	}
	for {
		i, api := c.node()
		r, err := api.Submit(ctx, req)
		if err == nil {
			return r.Token, nil
		}
		if ctx.Err() != nil || !transient(err) {
			return "", err
		}
		c.next(i)
	}
}

// A caller streaming through node A while A goes away carries on through
// node B with the same incarnation and lease, and every submission that
// was acknowledged is applied.
func TestCallerMovesToAnotherNodeWithTheSameIncarnation(t *testing.T) {
	c := startCluster(t)
	a := startAPI(t, c.etcd, apiserver.Config{})
	b := startAPI(t, c.etcd, apiserver.Config{})
	moveScenario(t, c.mc.Addr, grpcClient(t, a.Addr, nil), grpcClient(t, b.Addr, nil), func() { a.Stop(t) })
}

// moveScenario runs a caller through apiA, calls killA once A has carried
// some of the load, and checks that the caller carries on through apiB with
// the same incarnation and that every acknowledged submission is applied.
func moveScenario(t *testing.T, mcAddr string, apiA, apiB pb.CoordinatorClient, killA func()) {
	t.Helper()
	ctx := testenv.Ctx(t, 90*time.Second)
	fc := &failoverCaller{name: "mover", nodes: []pb.CoordinatorClient{apiA, apiB}}
	fc.reg = register(t, ctx, apiA, "mover", &pb.RegisterRequest{TtlSeconds: 3})

	kctx, stopKeepAlive := context.WithCancel(ctx)
	kaDone := make(chan error, 1)
	go func() { kaDone <- fc.keepAlive(kctx) }()

	const workers = 4
	type ack struct{ key, value, token string }
	acks := make(chan ack, 100000)
	var wg sync.WaitGroup
	wctx, stopWorkers := context.WithCancel(ctx)
	errs := make(chan error, workers)
	var movedOn sync.WaitGroup
	movedOn.Add(workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			after := false
			for j := 0; wctx.Err() == nil; j++ {
				key, value := fmt.Sprintf("mv-%d-%d", w, j%50), fmt.Sprintf("%d", j)
				tok, err := fc.submit(wctx, key, value)
				if err != nil {
					if wctx.Err() == nil {
						errs <- fmt.Errorf("worker %d: %w", w, err)
					}
					if !after {
						movedOn.Done()
					}
					return
				}
				acks <- ack{key, value, tok}
				if i, _ := fc.node(); i == 1 && !after {
					after = true
					movedOn.Done()
				}
			}
		}()
	}
	// Let A carry some of the load, then take it away mid-stream.
	testenv.Eventually(t, 20*time.Second, func() bool { return len(acks) >= 200 }, "200 acknowledged through A")
	killA()
	stopped := time.Now()
	moved := make(chan struct{})
	go func() { movedOn.Wait(); close(moved) }()
	select {
	case <-moved:
	case <-ctx.Done():
		t.Fatal("workers did not carry on through B")
	}
	// Past the lease's TTL: only B's stream can have kept it alive.
	testenv.Eventually(t, 30*time.Second, func() bool {
		return len(acks) >= 1500 && time.Since(stopped) > 2*time.Duration(fc.reg.TtlSeconds)*time.Second
	}, "1500 acknowledged in all, two lease TTLs after A went away")
	ttl, err := apiB.KeepAliveOnce(ctx, &pb.KeepAliveRequest{Name: "mover", Incarnation: fc.reg.Incarnation, LeaseId: fc.reg.LeaseId})
	if err != nil {
		t.Fatalf("the incarnation did not survive the move: %v", err)
	}
	stopWorkers()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	close(acks)

	// Every acknowledged value is applied: for each key, the value of its
	// newest acknowledgement is in memcached.
	newest := map[string]ack{}
	var last tokenseq.Token
	for a := range acks {
		tok, err := tokenseq.ParseToken(a.token)
		if err != nil {
			t.Fatal(err)
		}
		if old, ok := newest[a.key]; ok {
			otok, _ := tokenseq.ParseToken(old.token)
			if tok.Less(otok) {
				continue
			}
		}
		newest[a.key] = a
		last = tokenseq.Max(last, tok)
	}
	if _, err := apiB.WaitApplied(ctx, &pb.WaitAppliedRequest{Token: last.String()}); err != nil {
		t.Fatal(err)
	}
	// A worker writes its key j%50 with value j, so a key holds its newest
	// acknowledged value or a later one (a submission under way when the
	// workers stopped may have been accepted without its reply being read).
	for k, a := range newest {
		got := readKey(t, mcAddr, k)
		g, gerr := strconv.Atoi(got)
		w, _ := strconv.Atoi(a.value)
		if gerr != nil || g < w || (g-w)%50 != 0 {
			t.Errorf("%s = %q, want %q or a later value of the same key (token %s)", k, got, a.value, a.token)
		}
	}
	views, err := apiB.Registrations(ctx, &pb.RegistrationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(views.Registrations) != 1 || views.Registrations[0].Incarnation != fc.reg.Incarnation || views.Registrations[0].Status != "active" {
		t.Fatalf("registrations after the move: %v", views.Registrations)
	}
	stopKeepAlive()
	if err := <-kaDone; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("keepalive: %v", err)
	}
	t.Logf("moved with %d keys, lease TTL %ds at the end", len(newest), ttl.TtlSeconds)
}
