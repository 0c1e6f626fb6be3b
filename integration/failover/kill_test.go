package failover

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/coordinator-dev/coordinator/integration/harness"
	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
)

// startCluster starts the shared parts of the process tests: an embedded
// etcd in the test process, a memcached process, and a client.
func startCluster(t *testing.T, ns string) (*client.Client, keyspace.Layout, *testenv.Memcached, []string) {
	t.Helper()
	srv, cli := testenv.Etcd(t)
	mc := testenv.StartMemcached(t)
	c, err := client.New(client.Config{Etcd: cli, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	return c, keyspace.MustNew(ns), mc, srv.Endpoints()
}

// startPair starts two `coordinator serve` processes, n1 first so that it
// leads, and waits until n2 is campaigning behind it.
func startPair(t *testing.T, c *client.Client, layout keyspace.Layout, ns, mcAddr string, endpoints []string, ttl time.Duration) (leader, follower *harness.Node) {
	t.Helper()
	opts := func(id string) harness.NodeOptions {
		return harness.NodeOptions{ID: id, Endpoints: endpoints, Memcached: mcAddr, Namespace: ns, LeaseTTL: ttl}
	}
	n1 := harness.StartNode(t, opts("n1"))
	waitLeader(t, c.Etcd(), layout, "n1", 30*time.Second)
	n2 := harness.StartNode(t, opts("n2"))
	waitCampaigning(t, c.Etcd(), layout, 30*time.Second, "n1", "n2")
	return n1, n2
}

// TestLeaderKilledMidStream covers G3 (no loss, exactly once in effect,
// nothing refused applied) and G6 across a kill -9 of the leader process.
// Callers submit from several goroutines; the leader is killed in the middle
// of the stream. One stream ("f" keys) stops at the kill, so its last
// operations are whatever the dead leader left; another ("k" keys) keeps
// going through the failover; "g" keys are set once while no node leads, so
// only the new leader's replay can apply them. To make sure they are, the
// test itself keeps the killed leader's election lease alive until the "g"
// keys are submitted, so the follower cannot win before; it then lets the
// lease expire and checks that the new leader's takeover mark is above every
// "g" token: they were pending at the takeover. In the end every returned
// token is applied and every key holds the value of its highest-token
// operation: the state of a token-ordered application. A superseded
// incarnation's refused submission never lands, and a reader polling
// memcached throughout never sees a key go back.
func TestLeaderKilledMidStream(t *testing.T) {
	const ns = "kill"
	c, layout, mc, endpoints := startCluster(t, ns)
	leader, follower := startPair(t, c, layout, ns, mc.Addr, endpoints, 2*time.Second)
	term0 := observe(t, c.Etcd(), layout).Term

	ctx := testenv.Ctx(t, 2*time.Minute)
	caller, err := c.Register(ctx, "svc", client.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	// A superseded incarnation whose submission is refused while the leader
	// is dead: its key must never appear in memcached.
	zombie, err := c.Register(ctx, "zombie", client.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Register(ctx, "zombie", client.RegisterConfig{}); err != nil {
		t.Fatal(err)
	}

	frozen := startStream(t, caller, "f", 2, 3)
	live := startStream(t, caller, "k", 2, 3)
	gapKeys := keyNames("g", 6)
	r := startReader(t, mc.Addr, append(append(frozen.Keys(), live.Keys()...), gapKeys...), []string{"zombie-k"})

	live.WaitMore(100, 30*time.Second)
	frozen.Stop()
	// Hold the leader's election lease from here until the gap is
	// submitted: its election key stays, so the follower cannot take over
	// before.
	cli := c.Etcd()
	_, releaseLease := holdElectionLease(ctx, t, cli, layout, leader.ID)
	leader.Kill()
	t.Logf("killed leader %s (pid %d) after %d+%d submissions", leader.ID, leader.Pid(), frozen.Count(), live.Count())

	gap := submitGap(t, caller, "g", len(gapKeys))
	if _, err := zombie.Set(ctx, "zombie-k", []byte("refused"), 0); !errors.Is(err, client.ErrSuperseded) {
		t.Fatalf("superseded incarnation: Set returned %v, want ErrSuperseded", err)
	}
	if st := observe(t, cli, layout); st.Leader != leader.ID || st.Term != term0 {
		t.Fatalf("the gap was submitted while the election showed %+v, want the killed %s still holding term %d", st, leader.ID, term0)
	}
	// Let the killed leader's lease expire, as it would have without the
	// test: the follower takes over when it does.
	releaseLease()

	st := waitLeader(t, cli, layout, follower.ID, 30*time.Second)
	if st.Term <= term0 {
		t.Fatalf("new leader %s has term %d, not above %d", st.Leader, st.Term, term0)
	}
	t.Logf("%s took over with term %d after %d submissions", st.Leader, st.Term, live.Count())
	// The new leader's takeover mark is above every gap token: the gap
	// operations were pending when it took over, so its replay covers them.
	var mark int64
	testenv.Eventually(t, 30*time.Second, func() bool {
		resp, err := cli.Get(ctx, layout.TakeoverMark())
		if err != nil {
			t.Fatalf("read the takeover mark: %v", err)
		}
		if len(resp.Kvs) == 0 || string(resp.Kvs[0].Value) != strconv.FormatUint(st.Term, 10) {
			return false
		}
		mark = resp.Kvs[0].ModRevision
		return true
	}, "%s never wrote its takeover mark for term %d", st.Leader, st.Term)
	for _, g := range gap {
		if g.Tok.Revision >= mark {
			t.Errorf("gap operation %s has token %s, not below the takeover mark's revision %d", seqValue(g.Key, g.Seq), g.Tok, mark)
		}
	}
	live.WaitMore(100, 30*time.Second)
	live.Stop()
	subs := append(append(frozen.Submissions(), live.Submissions()...), gap...)
	t.Logf("%d submissions accepted", len(subs))

	checkAllApplied(t, c, mc.Addr, subs, 30*time.Second)
	r.Sync(10 * time.Second)
	r.Stop()
	if _, err := memcache.New(mc.Addr).Get("zombie-k"); !errors.Is(err, memcache.ErrCacheMiss) {
		t.Errorf("refused submission: memcached zombie-k: %v, want a miss", err)
	}
}
