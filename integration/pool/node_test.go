package pool_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/node"
	"github.com/coordinator-dev/coordinator/pkg/ops"
	"github.com/coordinator-dev/coordinator/pkg/topology"
)

// addrs returns the servers as node.Config.Memcached spells them.
func addrs(servers []hashring.Server) []string {
	a := make([]string, len(servers))
	for i, s := range servers {
		a[i] = s.String()
	}
	return a
}

// runNode runs node.Run in a goroutine and returns the channel of its
// result; the node is stopped when the test ends.
func runNode(t *testing.T, cfg node.Config) <-chan error {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testenv.Logger()
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = 2 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	done, finished := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(finished)
		done <- node.Run(ctx, cfg)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-finished:
		case <-time.After(30 * time.Second):
			t.Errorf("node %s did not stop", cfg.NodeID)
		}
	})
	return done
}

// waitRefusal waits for a node to return and checks that it refused to
// lead with a mismatch that says reason.
func waitRefusal(t *testing.T, done <-chan error, reason string) {
	t.Helper()
	select {
	case err := <-done:
		var me *topology.MismatchError
		if !errors.Is(err, topology.ErrMismatch) || !errors.As(err, &me) || !strings.Contains(err.Error(), reason) {
			t.Fatalf("node returned %v, want a topology mismatch saying %q", err, reason)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the node with other servers did not refuse within 30s")
	}
}

func TestOtherServerOrderRefusesToLead(t *testing.T) {
	_, cli := testenv.Etcd(t)
	_, servers := startPool(t, 3)
	l := keyspace.MustNew("order")
	a := testenv.StartNode(t, node.Config{Etcd: cli, Layout: l, NodeID: "a", Memcached: addrs(servers), Distribution: hashring.Ketama})
	ctx := testenv.Ctx(t, 60*time.Second)
	testenv.Eventually(t, 30*time.Second, func() bool {
		_, err := topology.Get(ctx, cli, l)
		return err == nil
	}, "the first node did not write the topology")

	swapped := []hashring.Server{servers[1], servers[0], servers[2]}
	waitRefusal(t, runNode(t, node.Config{Etcd: cli, Layout: l, NodeID: "b", Memcached: addrs(swapped), Distribution: hashring.Ketama}),
		"the same servers in another order")
	waitRefusal(t, runNode(t, node.Config{Etcd: cli, Layout: l, NodeID: "c", Memcached: addrs(servers)}),
		"distribution modula, not ketama")

	// The node that matches still leads: it applies writes.
	tok := submit(t, cli, "order", "ok", 10)
	waitApplied(t, cli, "order", tok)
	if a.Stats.Applied.Load() == 0 {
		t.Fatal("the matching node applied nothing")
	}
	got, err := topology.Get(ctx, cli, l)
	if err != nil || got.Epoch != 1 || got.Diff(topology.Topology{Distribution: hashring.Ketama, Servers: servers}) != "" {
		t.Fatalf("topology after the refusals: %v, %v", got, err)
	}
}

// TestChangedTopologyTakenAtWin: a topology set while no node leads is
// taken by the next node that wins with the applied servers (it moves the
// keys, then applies with the new servers); a node started afterwards
// with the old servers refuses to lead.
func TestChangedTopologyTakenAtWin(t *testing.T) {
	_, cli := testenv.Etcd(t)
	_, servers := startPool(t, 3)
	const ns = "change"
	l := keyspace.MustNew(ns)
	a := testenv.StartNode(t, node.Config{Etcd: cli, Layout: l, NodeID: "a", Memcached: addrs(servers)})
	keys := map[string]string{}
	for i := range 300 {
		keys[fmt.Sprintf("a-%d", i)] = fmt.Sprintf("a-value-%d", i)
	}
	waitApplied(t, cli, ns, submitKeys(t, cli, ns, keys))
	a.Stop(t)
	ctx := testenv.Ctx(t, 60*time.Second)
	next, err := topology.Set(ctx, cli, l, topology.Topology{Distribution: hashring.Modula, Servers: servers[:2]})
	if err != nil {
		t.Fatal(err)
	}
	b := testenv.StartNode(t, node.Config{Etcd: cli, Layout: l, NodeID: "b", Memcached: addrs(servers)})
	c, err := client.New(client.Config{Etcd: cli, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitTopologyApplied(t, c, l, next.Epoch)
	if bad := readWithGomemcache(t, servers[:2], keys); len(bad) != 0 {
		t.Fatalf("%d keys missing or wrong with the new servers, %q first", len(bad), bad[0])
	}
	waitApplied(t, cli, ns, submit(t, cli, ns, "b", 10))
	if b.Stats.Applied.Load() == 0 {
		t.Fatal("the node that took the change applied nothing")
	}
	waitRefusal(t, runNode(t, node.Config{Etcd: cli, Layout: l, NodeID: "c", Memcached: addrs(servers)}), "3 servers, not 2")
}

// submit submits n sets of keys prefix-0 ... in batches and returns the
// last token; the value of each key is prefix's value for the key.
func submit(t *testing.T, cli *clientv3.Client, ns, prefix string, n int) client.Token {
	t.Helper()
	keys := make(map[string]string, n)
	for i := range n {
		keys[fmt.Sprintf("%s-%d", prefix, i)] = fmt.Sprintf("%s-value-%d", prefix, i)
	}
	return submitKeys(t, cli, ns, keys)
}

// submitKeys submits sets of keys and returns the last token.
func submitKeys(t *testing.T, cli *clientv3.Client, ns string, keys map[string]string) client.Token {
	t.Helper()
	c, err := client.New(client.Config{Etcd: cli, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := testenv.Ctx(t, 120*time.Second)
	caller, err := c.Register(ctx, "pool-writer", client.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var (
		batch []ops.Op
		tok   client.Token
	)
	flush := func() {
		if tok, err = caller.Submit(ctx, batch...); err != nil {
			t.Fatal(err)
		}
		batch = batch[:0]
	}
	for k, v := range keys {
		batch = append(batch, ops.Set(k, []byte(v), 0))
		if len(batch) == 250 {
			flush()
		}
	}
	if len(batch) > 0 {
		flush()
	}
	return tok
}

// waitApplied waits until tok (and every token before it) is in memcached.
func waitApplied(t *testing.T, cli *clientv3.Client, ns string, tok client.Token) {
	t.Helper()
	c, err := client.New(client.Config{Etcd: cli, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WaitApplied(testenv.Ctx(t, 120*time.Second), tok); err != nil {
		t.Fatal(err)
	}
}
