package failover

import (
	"context"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/client"
)

// TestGracefulStopHandsOverAtOnce covers the graceful stop of "What must be
// survived" (and G3 for an operation submitted after it): a leader that gets
// SIGTERM resigns, so the follower takes over without waiting for the
// leader's lease to expire.
//
// Both nodes run with a 10s lease, and to make the test independent of the
// clock the test itself keeps the stopping leader's election lease alive from
// outside. The lease therefore cannot expire during the test: the only way
// the follower can take over is the stopping node deleting its election key
// and revoking its lease. The test asserts that the lease is gone and the key
// deleted as soon as the process has exited, and that the follower then
// applies an operation submitted after the stop. How long the handover took
// is logged, not asserted.
func TestGracefulStopHandsOverAtOnce(t *testing.T) {
	const ns = "graceful"
	c, layout, mc, endpoints := startCluster(t, ns)
	leader, follower := startPair(t, c, layout, ns, mc.Addr, endpoints, 10*time.Second)
	term0 := observe(t, c.Etcd(), layout).Term
	cli := c.Etcd()

	ctx := testenv.Ctx(t, 2*time.Minute)
	caller, err := c.Register(ctx, "svc", client.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := caller.Set(ctx, "k", []byte("before"), 0)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := caller.WaitApplied(wctx, tok); err != nil {
		t.Fatalf("first operation not applied: %v", err)
	}

	camp, _ := holdElectionLease(ctx, t, cli, layout, leader.ID)

	// Time the handover by the new term being taken, seen by a watch.
	cur, err := cli.Get(ctx, layout.Term())
	if err != nil {
		t.Fatal(err)
	}
	termTaken := make(chan time.Duration, 1)
	wch := cli.Watch(ctx, layout.Term(), clientv3.WithRev(cur.Header.Revision+1))
	start := time.Now()
	go func() {
		for range wch {
			termTaken <- time.Since(start)
			return
		}
	}()
	leader.Stop(30 * time.Second)
	exited := time.Since(start)
	if code := leader.ExitCode(); code != 0 {
		t.Errorf("%s exited with status %d after SIGTERM", leader.ID, code)
	}
	ttl, err := cli.TimeToLive(ctx, camp.Lease)
	if err != nil {
		t.Fatalf("time to live of the former leader's lease: %v", err)
	}
	if ttl.TTL != -1 {
		t.Errorf("the former leader's election lease %x is still granted (TTL %ds) after it exited: it did not revoke it", camp.Lease, ttl.TTL)
	}
	resp, err := cli.Get(ctx, camp.Key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 0 {
		t.Errorf("the former leader's election key %s still exists after it exited: it did not resign", camp.Key)
	}

	tok, err = caller.Set(ctx, "k", []byte("after"), 0)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel = context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := caller.WaitApplied(wctx, tok); err != nil {
		t.Fatalf("operation submitted after the stop was not applied: %v", err)
	}
	applied := time.Since(start)
	st := observe(t, cli, layout)
	if st.Leader != follower.ID || st.Term <= term0 {
		t.Errorf("after the stop the election shows %+v, want %s with a term above %d", st, follower.ID, term0)
	}
	it, err := memcache.New(mc.Addr).Get("k")
	if err != nil || string(it.Value) != "after" {
		t.Fatalf("memcached k = %v, %v; want %q", it, err, "after")
	}
	handover := "not seen"
	select {
	case d := <-termTaken:
		handover = d.Round(time.Millisecond).String()
	default:
	}
	// Under -race the exit includes the race runtime's 1s sleep at exit.
	t.Logf("handover (lease TTL 10s): %s took term %d %s after SIGTERM; %s exited after %s; an operation submitted after the exit was applied %s after SIGTERM",
		follower.ID, st.Term, handover, leader.ID, exited.Round(time.Millisecond), applied.Round(time.Millisecond))
}
