package cluster

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// memberClient is a client of member m alone.
func memberClient(t *testing.T, m *Member) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.Endpoint()}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// TestIsolatedMemberRefusesWhileTheOthersServe isolates one member: the
// other two keep a leader and accept writes, the isolated one (still
// reachable by clients) refuses a linearizable read; healed, it catches up.
func TestIsolatedMemberRefusesWhileTheOthersServe(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := Start(ctx, t, Config{Nodes: -1})
	for _, m := range c.Members {
		if got := m.PeerLink.Target(); got != m.PeerAddr {
			t.Fatalf("%s: peer proxy forwards to %s, not %s", m.Name, got, m.PeerAddr)
		}
	}
	m := c.Members[0]
	c.IsolateMember(m)
	others := memberClient(t, c.Members[1])
	var put *clientv3.PutResponse
	if err := Poll(ctx, 100*time.Millisecond, func() bool {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		var err error
		put, err = others.Put(pctx, "isolated-test", "v")
		return err == nil
	}); err != nil {
		t.Fatalf("the two connected members never accepted a write: %v", err)
	}
	iso := memberClient(t, m)
	gctx, gcancel := context.WithTimeout(ctx, 3*time.Second)
	_, err := iso.Get(gctx, "isolated-test")
	gcancel()
	if err == nil {
		t.Fatalf("isolated member %s served a linearizable read", m.Name)
	}
	c.HealPeers()
	if err := Poll(ctx, 100*time.Millisecond, func() bool {
		gctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		r, err := iso.Get(gctx, "isolated-test")
		return err == nil && r.Header.Revision >= put.Header.Revision
	}); err != nil {
		t.Fatalf("healed member %s never caught up: %v", m.Name, err)
	}
	if err := c.WaitEtcdHealthy(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestOneWayCutHoldsOnlyThatDirection cuts the etcd leader's traffic to one
// follower: the leader's heartbeats, which go down the stream the follower
// dialled, are held in the leader's peer proxy, and the other follower
// keeps the cluster writable.
func TestOneWayCutHoldsOnlyThatDirection(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := Start(ctx, t, Config{Nodes: -1})
	leader, err := c.EtcdLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var to, other *Member
	for _, m := range c.Members {
		switch {
		case m == leader:
		case to == nil:
			to = m
		default:
			other = m
		}
	}
	c.CutPeer(leader, to)
	if err := Poll(ctx, 20*time.Millisecond, func() bool { return leader.PeerLink.Held() > 0 }); err != nil {
		t.Fatalf("the leader's proxy never held traffic for %s: %v", to.Name, err)
	}
	cli := memberClient(t, other)
	if err := Poll(ctx, 100*time.Millisecond, func() bool {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := cli.Put(pctx, "one-way", "v")
		return err == nil
	}); err != nil {
		t.Fatalf("no write through %s during the one-way cut: %v", other.Name, err)
	}
	c.HealPeers()
	if err := c.WaitEtcdHealthy(ctx); err != nil {
		t.Fatal(err)
	}
}
